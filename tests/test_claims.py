"""Every claim rule (rl_align/claims) on synthetic results built to reach each of its verdicts:
reproduced, partly, not reproduced (each rule can fail), underpowered, and regime not reached.

The synthetic results have the schema the runners write (results.json), with the seeds' values
chosen so that the outcome is not in doubt (effects tens of standard errors from the thresholds).
"""

import numpy as np
import pytest

from rl_align import claims
from rl_align.claims import core
from rl_align.claims import eigenmaps
from rl_align.claims import specialization as spec

R, P, N = core.REPRODUCED, core.PARTLY, core.NOT_REPRODUCED
U, G, E = core.UNDERPOWERED, core.REGIME_NOT_REACHED, core.NOT_EVALUABLE


def _noise(s, scale=1e-3, seed=0):
  return scale * np.random.default_rng(seed).standard_normal(s)


# ----------------------------------------------------------------------------------------------
# Statistics.


def test_t_interval_matches_the_student_t_table():
  # t_{0.975, 7} = 2.3646 (printed tables); n = 2 gives 12.706 (the old "2 SE" was far too lenient)
  assert core.t_critical(8) == pytest.approx(2.3646, abs=1e-4)
  assert core.t_critical(2) == pytest.approx(12.706, abs=1e-3)
  x = np.array([1.0, 2.0, 3.0, 4.0])
  ci = core.interval(x)
  half = core.t_critical(4) * x.std(ddof=1) / 2
  assert ci["lo"] == pytest.approx(2.5 - half, rel=1e-12) and ci["n"] == 4


def test_paired_and_welch_and_ratio():
  a, b = np.arange(10.0), np.arange(10.0) - 1 + _noise(10, 0.01)
  assert core.excludes_zero(core.paired(a, b)) and not core.excludes_zero(core.paired(a, b), -1)
  w = core.welch(np.full(8, 1.0) + _noise(8), np.full(9, 0.0) + _noise(9, seed=1))
  assert core.excludes_zero(w) and w["mean"] == pytest.approx(1.0, abs=0.01)
  r = core.ratio_interval(np.full(10, 0.5) + _noise(10), np.full(10, 1.0) + _noise(10, seed=2))
  assert r["lo"] < 0.5 < r["hi"] and r["ratio"] == pytest.approx(0.5, abs=0.01)


def test_judge_order_evaluable_regime_power_rule():
  gate_no = core.Gate(np.zeros(8, bool), "x")
  gate_yes = core.Gate(np.ones(8, bool), "x")
  gate_dead = core.Gate(np.zeros(8, bool), "x", any_finished=False)
  assert core.judge([True], n=8, gate=gate_dead) == E
  assert core.judge([True], n=8, gate=gate_no) == G
  assert core.judge([True], n=7, gate=gate_yes) == U
  assert core.judge([True, False], n=8, gate=gate_yes) == P
  assert core.judge([False, False], n=8, gate=gate_yes) == N
  assert core.judge([True, True], n=8, gate=gate_yes) == R


# ----------------------------------------------------------------------------------------------
# Fig 2.


def _fig2(kind, s=8, labels="random"):
  eig, rnd, fit = {
    "R": (0.2, 2.0, 0.5),
    "P": (0.5, 0.6, 0.5),
    "N": (1.0, 0.5, 0.5),
    "G": (0.2, 2.0, 0.11),
  }[kind]
  e = eig + _noise(s, 0.01)
  r = rnd + _noise(s, 0.01, seed=1)
  snaps = [
    {
      "step": st,
      "misalignment_eigenbasis": (e * st / 100).tolist(),
      "misalignment_random_basis": (r * st / 100).tolist(),
    }
    for st in (0, 25, 50, 75, 100)
  ]
  res = {
    "misalignment_eigenbasis": e,
    "misalignment_random_basis": r,
    "misalignment_floor": {"mean": 0.13, "std": 0.02},
    "snapshots": snaps,
    "train_accuracy": np.full(s, fit),
    "diverged": np.zeros(s, bool),
  }
  return res, {"labels": labels, "num_classes": 10}


@pytest.mark.parametrize(
  "kind,s,labels,want",
  [
    ("R", 8, "random", R),
    ("P", 8, "random", P),
    ("N", 8, "random", N),
    ("R", 4, "random", U),
    ("G", 8, "random", G),
    ("G", 8, "real", R),
  ],
)
def test_fig2_rule_reaches_every_verdict(kind, s, labels, want):
  res, cfg = _fig2(kind, s, labels)
  row = eigenmaps.fig2_row("random", res, cfg, None)
  assert row.verdict == want, row.ours
  assert row.n == (0 if want == G else s)
  assert ("fit" in row.gate) == (labels == "random")


def test_fig2_all_diverged_is_not_evaluable():
  res, cfg = _fig2("R")
  res["diverged"] = np.ones(8, bool)
  assert eigenmaps.fig2_row("random", res, cfg, None).verdict == E


# ----------------------------------------------------------------------------------------------
# Fig 4.


def _fig4(kind, s=8, labels="random"):
  """f over epochs 0, 10, 20, 40 on d = 9 eigenvalues (index 0 = the largest)."""
  lam = np.geomspace(7.5, 0.024, 9)
  base = 0.002
  shape = np.array([0.0, 0.3, 0.6, 0.9, 1.0, 0.8, 0.5, 0.3, 0.2])  # peak at index 4
  if kind == "N":
    shape = np.linspace(1.0, 0.1, 9)  # monotone: peak at lambda_max
  rise = {0: 0.0, 10: 0.02 if kind not in ("P", "N") else 0.7, 20: 0.5, 40: 1.0}
  if labels == "real" and kind == "N":
    rise = {0: 0.0, 10: 0.8, 20: 0.4, 40: 0.3}  # rises, then falls
  snaps = [
    {
      "step": ep * 10,
      "epoch": ep,
      "f": (base + 0.08 * rise[ep] * shape + _noise((s, 9), 1e-4, seed=ep)).tolist(),
    }
    for ep in rise
  ]
  fit = 0.11 if kind == "G" else 0.4
  res = {
    "eigenvalues": lam,
    "snapshots": snaps,
    "f": snaps[-1]["f"],
    "train_accuracy": np.full(s, fit),
    "diverged": np.zeros(s, bool),
  }
  return res, {"labels": labels, "num_classes": 10}


@pytest.mark.parametrize(
  "kind,s,want", [("R", 8, R), ("P", 8, P), ("N", 8, N), ("R", 3, U), ("G", 8, G)]
)
def test_fig4_random_rule_reaches_every_verdict(kind, s, want):
  res, cfg = _fig4(kind, s)
  shape, magnitude = eigenmaps.fig4_rows("random", res, cfg, None)
  assert shape.verdict == want, shape.ours
  assert magnitude.section == core.DESCRIPTIVE and magnitude.verdict == core.DESCRIBED


def test_fig4_back_to_baseline_means_within_a_fifth_of_the_rise():
  res, cfg = _fig4("R")
  for snap in res["snapshots"]:  # f at the largest lambda lifted to 30% of the peak's rise
    f = np.asarray(snap["f"])
    f[:, 0] = 0.002 + 0.3 * (f[:, 4] - 0.002)
    snap["f"] = f.tolist()
  row = eigenmaps.fig4_rows("random", res, cfg, None)[0]
  assert row.verdict == P and "0.30 of the rise" in row.ours


@pytest.mark.parametrize("kind,s,want", [("R", 8, R), ("N", 8, P), ("R", 5, U)])
def test_fig4_real_rule(kind, s, want):
  res, cfg = _fig4(kind, s, labels="real")
  assert eigenmaps.fig4_rows("real", res, cfg, None)[0].verdict == want


def test_fig4_real_rule_can_fail_entirely():
  res, cfg = _fig4("R", labels="real")
  for snap in res["snapshots"]:  # f never leaves its init level (and wobbles)
    snap["f"] = (0.002 + _noise((8, 9), 1e-5, seed=snap["step"])).tolist()
  assert eigenmaps.fig4_rows("real", res, cfg, None)[0].verdict == N


# ----------------------------------------------------------------------------------------------
# Fig 20.


@pytest.mark.parametrize(
  "offset,s,fit,want",
  [(0.0, 8, 0.5, R), (0.02, 8, 0.5, P), (0.1, 8, 0.5, N), (0.0, 5, 0.5, U), (0.0, 8, 0.1, G)],
)
def test_fig20_rule(offset, s, fit, want):
  ref = {"sigma": (0.5, 1.0, 2.0), "f": (0.2, 0.22, 0.25)}
  sigma = np.array([0.5, 1.0, 2.0])
  f = np.array(ref["f"]) + offset + _noise((s, 3), 1e-4)
  res = {"sigma": sigma, "f": f, "train_accuracy": np.full(s, fit), "diverged": np.zeros(s, bool)}
  row = eigenmaps.fig20_row("right", res, {"paper_reference": ref, "labels": "random"}, None)
  assert row.verdict == want, row.ours


# ----------------------------------------------------------------------------------------------
# Fig 3.


def _fig3(kind, s=8):
  aligned = kind in ("R", "G", "U")
  tests = {
    "misalignment_eigenbasis": 0.3 if aligned or kind == "P" else 5.0,
    "misalignment_random_bases": {"mean": 5.0, "std": 0.1, "q025": 4.8, "trials": 200},
    "misalignment_floor": {"mean": 0.3, "std": 0.05, "trials": 500},
    "group_energy": 0.8 if aligned else 0.2,
    "group_energy_chance": {"mean": 0.23, "std": 0.02, "q95": 0.27, "trials": 2000},
    "k": 10,
  }
  fit = 0.1 if kind == "G" else 0.6
  return {
    "results": {
      "alignment_tests": tests,
      "train_accuracy": [fit] * s,
      "diverged": [False] * s,
      "num_seeds_pooled": s,
      "claims": {"figure": "fig3"},
    },
    "config": {"num_classes": 10},
  }


@pytest.mark.parametrize(
  "kind,s,want", [("R", 8, R), ("P", 8, P), ("N", 8, N), ("U", 6, U), ("G", 8, G)]
)
def test_fig3_order_free_rule(kind, s, want):
  assert claims.rows(_fig3(kind, s))[0].verdict == want


def test_fig3_group_energy_is_order_free():
  """A filter basis that is the data basis in reversed order, with the two degenerate PCs mixed,
  has every top eigenvector inside one group (energy 1), where rank order sees no overlap."""
  from rl_align import alignment, filters  # pylint: disable=g-import-not-at-top

  d = 6
  v = alignment.random_basis(0, d)
  lam = np.array([6.0, 5.0, 5.0, 3.0, 2.0, 1.0])
  groups = alignment.group_degenerate(lam, rtol=0.1)
  mix = np.eye(d)
  mix[1:3, 1:3] = np.array([[1, 1], [1, -1]]) / np.sqrt(2)
  u = (v @ mix)[:, ::-1]
  assert filters.group_energy(v, groups, u) == pytest.approx(np.ones(d), abs=1e-12)
  assert alignment.subspace_overlap(v, u, 1) < 1e-20


# ----------------------------------------------------------------------------------------------
# Fig 5.


def _curve(t, speed, s, seed):
  """Accuracy curves [s, T] rising from 0.1 toward 0.9 at `speed` (per-seed noise)."""
  base = 0.1 + 0.8 * (1 - np.exp(-speed * t / t[-1]))
  return np.clip(base + _noise((s, len(t)), 0.002, seed), 0, 1)


def _fig5(speeds, s=16, fit=0.5, rotated=None, steps=None):
  t = np.arange(0, 301, 15.0) if steps is None else steps
  arms = {}
  for i, (arm, sp) in enumerate(speeds.items()):
    acc = _curve(t, sp, s, i)
    acc[:, 0] = 0.1
    arms[arm] = {"iterations": t, "train_accuracy": acc, "finished": np.ones(s, bool)}
  res = {
    "arms": arms,
    "upstream": {
      "train_accuracy": np.full(s, fit),
      "diverged": np.zeros(s, bool),
      "num_classes": 10,
    },
    "sigma_w": {"seeds": "fitted", "num_seeds": s, "num_fitted": s if fit >= 0.2 else 0},
    "claims": {"figure": "fig5"},
  }
  return {"results": res, "config": {"downstream": {"labels": "real"}}}


def _row(rows, rid):
  return next(r for r in rows if r.id == rid)


def test_fig5_rows_reproduced_including_the_control():
  run = _fig5(
    {
      "scratch": 2.0,
      "pretrained": 3.0,
      "pretrained_no_rescaling": 3.5,
      "covariance": 2.9,
      "covariance_rotated": 2.0,
    }
  )
  rows = claims.rows(run)
  for rid in (
    "fig5.pretrained_faster",
    "fig5.covariance_faster",
    "fig5.weight_scaling",
    "fig5.alignment_not_spectrum",
    "fig5.covariance_most_of_pretrained",
  ):
    assert _row(rows, rid).verdict == R, (rid, _row(rows, rid).ours)
  assert all(r.n == 16 for r in rows)


def test_fig5_rules_can_fail():
  run = _fig5(
    {
      "scratch": 2.0,
      "pretrained": 3.0,
      "pretrained_no_rescaling": 1.5,
      "covariance": 1.5,
      "covariance_rotated": 2.5,
    }
  )
  rows = claims.rows(run)
  assert _row(rows, "fig5.covariance_faster").verdict == N
  assert _row(rows, "fig5.weight_scaling").verdict == N
  assert _row(rows, "fig5.alignment_not_spectrum").verdict == N
  assert _row(rows, "fig5.covariance_most_of_pretrained").verdict == N


def test_fig5_partly_most_of_and_faster():
  # covariance gets ~60% of pretrained's gain with wide seed noise: ratio >= 0.5, interval not
  run = _fig5({"scratch": 2.0, "pretrained": 2.6, "covariance": 2.35})
  cov = run["results"]["arms"]["covariance"]["train_accuracy"]
  cov += np.linspace(-0.04, 0.04, 16)[:, None] * (np.arange(cov.shape[1]) > 0)
  row = _row(claims.rows(run), "fig5.covariance_most_of_pretrained")
  assert row.verdict == P, row.ours
  # faster only early: the matched iterations at 50% / 75% pass, the whole curve and 90% do not
  t = np.arange(0, 301, 15.0)
  run = _fig5({"scratch": 2.0, "pretrained": 2.0})
  pre = run["results"]["arms"]["pretrained"]["train_accuracy"]
  pre[:, (t > 0) & (t <= 60)] += 0.05
  pre[:, t > 60] -= 0.01
  assert _row(claims.rows(run), "fig5.pretrained_faster").verdict == P


def test_fig5_gates_power_and_saturation():
  speeds = {"scratch": 2.0, "pretrained": 3.0, "covariance": 2.9}
  assert _row(claims.rows(_fig5(speeds, s=6)), "fig5.pretrained_faster").verdict == U
  rows = claims.rows(_fig5(speeds, fit=0.12))
  assert _row(rows, "fig5.pretrained_faster").verdict == G
  assert _row(rows, "fig5.covariance_faster").verdict == G  # Sigma_w from no fitted seed
  saturated = _fig5({"scratch": 40.0, "pretrained": 60.0})  # scratch done by iteration 30
  row = _row(claims.rows(saturated), "fig5.pretrained_faster")
  assert row.verdict == G and "of the run" in row.gate


def test_fig5_no_advantage_to_account_for_is_not_evaluable():
  run = _fig5({"scratch": 2.0, "pretrained": 2.0, "covariance": 2.0})
  assert _row(claims.rows(run), "fig5.covariance_most_of_pretrained").verdict == E


def test_fig5_ungated_seeds_are_reported_beside_the_gated():
  run = _fig5({"scratch": 2.0, "pretrained": 3.0})
  run["results"]["upstream"]["train_accuracy"][:4] = 0.1  # 12 of 16 upstream seeds fitted
  row = _row(claims.rows(run), "fig5.pretrained_faster")
  assert row.n == 12 and "every finished seed (no gate)" in row.ours and "12/16" in row.gate


# ----------------------------------------------------------------------------------------------
# Fig 1.


def _fig1(direction, pre_speed, s=8, fit=0.95, dead=0.1):
  run = _fig5(
    {"scratch": 2.0, "pretrained": pre_speed, "pretrained_no_rescaling": pre_speed}, s, fit
  )
  run["results"]["claims"] = {"figure": "fig1", "direction": direction}
  run["results"]["upstream"]["dead_fraction"] = {
    "conv_0": np.full(s, 0.0),
    "conv_1": np.full(s, dead),
  }
  return run


@pytest.mark.parametrize(
  "direction,speed,s,fit,dead,want",
  [
    ("negative", 1.2, 8, 0.95, 0.1, R),
    ("negative", 3.0, 8, 0.95, 0.1, N),
    ("negative", 1.2, 8, 0.6, 0.1, G),
    ("negative", 1.2, 8, 0.95, 0.8, G),
    ("negative", 1.2, 4, 0.95, 0.1, U),
    ("positive", 3.0, 8, 0.3, 0.9, R),
    ("positive", 1.2, 8, 0.3, 0.1, N),
  ],
)
def test_fig1_rule(direction, speed, s, fit, dead, want):
  rows = claims.rows(_fig1(direction, speed, s, fit, dead))
  assert {r.verdict for r in rows} == {want}, [r.ours for r in rows]


def test_fig1_row_outside_the_regime_shows_the_ungated_seeds_without_judging_them():
  rows = claims.rows(_fig1("negative", 1.2, fit=0.6))  # slower, but never memorised
  assert {r.verdict for r in rows} == {G}
  assert all("every finished seed (no gate, not judged): whole curve -" in r.ours for r in rows)


def test_fig1_partly_when_only_early():
  run = _fig1("negative", 2.0)
  t = np.asarray(run["results"]["arms"]["scratch"]["iterations"])
  for arm in ("pretrained", "pretrained_no_rescaling"):
    acc = run["results"]["arms"][arm]["train_accuracy"]
    acc[:, (t > 0) & (t <= 60)] -= 0.2  # behind at 4 of 20 logged iterations only
  assert {r.verdict for r in claims.rows(run)} == {P}


# ----------------------------------------------------------------------------------------------
# Section 3 and the Fig 1 search.


def _point(width, behind, s=8, fit=0.95, dead=0.1, drop=True, lr=0.01):
  t = np.arange(0, 101, 5.0)
  scratch = _curve(t, 2.0, s, 1)
  arm = _curve(t, 2.0, s, 2) + behind * (t > 0)
  d_after = 0.3 if drop else 0.6
  later = {
    "dense_1": {
      "before": 0.6,
      "after": d_after,
      "drop": 0.6 - d_after,
      "drop_std": 0.01,
      "scratch_drop": 0.0,
      "dead_before": dead,
    }
  }
  return {
    "width": width,
    "learning_rate": lr,
    "num_random_classes": 10,
    "upstream_steps": 1000,
    "arm": "rescaled",
    "upstream_train_accuracy": np.full(s, fit),
    "finished": np.ones(s, bool),
    "downstream_steps": t,
    "accuracy_seeds": arm,
    "accuracy_scratch_seeds": scratch,
    "activity_drop": later,
  }


def _sweep(points, figure="specialization"):
  res = {
    "points": {f"w={p['width']},lr={p['learning_rate']},i={i}": p for i, p in enumerate(points)},
    "later_layers": ["dense_1"],
    "layers": ["dense_0", "dense_1"],
    "claims": {"figure": figure},
  }
  return {"results": res, "config": {}}


def test_a_point_with_one_seed_in_the_regime_is_not_counted_in_the_correction():
  """Bonferroni over the points a Welch interval can test: a point memorised by one seed only
  does not widen the other points' intervals (nor count as memorised in the gate text)."""
  one = _point(64, 0.0, fit=0.5)
  one["upstream_train_accuracy"][0] = 1.0  # 1 of 8 seeds memorised
  pts = spec.gated_points(_sweep([_point(16, -0.1), one])["results"], memorised=True)
  assert pts[next(iter(pts))][1].reached and list(pts.values())[1][1].reached
  assert spec.in_regime(pts) == [next(iter(pts))]
  rows = claims.rows(_sweep([_point(16, -0.1), one, _point(256, 0.05)]))
  assert "2/3 points memorised" in rows[0].gate, rows[0].gate


def test_section3_rules_reproduced():
  rows = claims.rows(_sweep([_point(16, -0.1), _point(256, +0.05)]))
  assert [r.verdict for r in rows] == [R, R], [r.ours for r in rows]


@pytest.mark.parametrize(
  "points,want",
  [
    ([_point(16, -0.1, drop=False), _point(256, -0.05, drop=False)], (N, N)),  # rules can fail
    ([_point(16, -0.1, fit=0.5), _point(256, 0.05, fit=0.5)], (G, G)),  # never memorised
    ([_point(16, -0.1, dead=0.8), _point(256, 0.05, dead=0.8)], (G, G)),  # later layers dead
    ([_point(16, -0.1, s=5), _point(256, 0.05, s=5)], (U, U)),
    ([_point(16, +0.05), _point(256, +0.05)], (E, E)),  # no negative point
    (
      [
        _point(16, -0.1),
        _point(16, -0.1, lr=0.02, drop=False),
        _point(256, 0.05),
        _point(256, -0.05, lr=0.02),
      ],
      (P, P),
    ),
  ],
)
def test_section3_rules_reach_every_verdict(points, want):
  rows = claims.rows(_sweep(points))
  assert tuple(r.verdict for r in rows) == want, [r.ours for r in rows]


def test_fig1_search_corrects_for_the_points_searched():
  """One point behind scratch by ~2.5 SE passes at 95% but not after the correction for 20 points
  searched: partly, not reproduced."""
  pts = [_point(16, 0.0, lr=0.01 * (i + 1)) for i in range(20)]
  p = pts[0]
  ref = p["accuracy_scratch_seeds"][:, 1:].mean(1)
  se = np.sqrt(2 * ref.var(ddof=1) / len(ref))
  p["accuracy_seeds"] = p["accuracy_scratch_seeds"] - 2.8 * se * (p["downstream_steps"] > 0)
  p["accuracy_seeds"] = p["accuracy_seeds"] + np.linspace(-1, 1, 8)[:, None] * se
  row = spec.search_row(_sweep(pts, "fig1_search")["results"], None, "negative")
  assert row.verdict == P, row.ours
  p["accuracy_seeds"] = p["accuracy_seeds"] - 0.05 * (p["downstream_steps"] > 0)
  assert spec.search_row(_sweep(pts, "fig1_search")["results"], None, "negative").verdict == R


# ----------------------------------------------------------------------------------------------
# The registry and the rendering.


def test_unknown_or_missing_figure_key_is_a_clear_error():
  with pytest.raises(claims.ReportError, match="does not say which figure"):
    claims.rows({"name": "wd", "results": {}})
  with pytest.raises(claims.ReportError, match="no claims are registered for figure 'fig9'"):
    claims.rows({"name": "wd", "results": {"claims": {"figure": "fig9"}}})


def test_render_sorts_by_figure_and_keeps_descriptive_rows_out_of_the_tally():
  res4, cfg4 = _fig4("R")
  run4 = {
    "name": "b",
    "results": {"random": {"checks": {}}, "claims": {"figure": "fig4"}},
    "panels": {"random": {"results": res4, "config": cfg4}},
    "config": {},
  }
  run3 = dict(_fig3("R"), name="a")
  rows = claims.rows(run4) + claims.rows(run3)
  for r, name in zip(rows, ["b", "b", "a"]):
    r.run = name
  text = claims.render([run4, run3], rows)
  table = text.split("## Descriptive")[0]
  assert table.index("| Fig 3 |") < table.index("| Fig 4 |")
  assert "Verdicts: 2 reproduced" in text and "magnitude" not in table
  assert "| 8 |" in table


def test_run_line_counts_earlier_invocations_and_says_which_were_killed():
  rec = {
    "wall_s": 100.0,
    "machine": {"cpu_model": "cpu", "cores": 2, "fp32_matmul_gflops": 50.0},
    "earlier_runs": [{"wall_s": 20.0}, {"wall_s": None, "status": "running"}],
  }
  line = claims.run_line({"name": "x", "run": rec})
  assert "100 s (+ 20 s in 1 earlier invocation(s)) (+ 1 killed invocation(s)" in line, line
