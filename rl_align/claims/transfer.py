"""Claims of the transfer runs: Fig 5 (and section 2.5), Fig 1, Table 1.

An arm's downstream curves (results.json `arms[arm]`: iterations [T], train_accuracy [S][T],
finished [S]) are compared with a reference arm seed by seed (seed i of every arm shares its data
order), on

- the whole curve: the per-seed mean over the logged iterations after 0 of arm - reference;
- difficulty-matched iterations: where the reference's seed mean first covers MATCHED fractions of
  its rise from iteration 0 to the end (not fixed fractions of an arbitrary run length).

Gates: the pretrained arms carry upstream seed i, so they are judged on the seeds whose upstream
fitted its random labels (`core.fit_gate`; Fig 1's negative transfer: memorised, `core.memorised_gate`);
the covariance arms draw from Sigma_w pooled over the fitted upstream seeds (`sigma_w` in
results.json says which).  Fig 5 also needs a downstream run in which scratch has not saturated
early: it reaches SATURATED of its rise no earlier than EARLY of the run.
"""

from typing import Any, Mapping

import numpy as np

from rl_align.claims import core
from rl_align.claims import paper

MATCHED = (0.5, 0.75, 0.9)  # fractions of the reference's rise: difficulty-matched iterations
SATURATED, EARLY = 0.9, 0.2
MOST = 0.5  # Fig 5: covariance accounts for "most" of pretrained's gain


def arm_curves(res: Mapping[str, Any], arm: str) -> dict[str, Any]:
  """An arm's iterations [T], per-seed train accuracy [S, T] and finished flags [S]."""
  entry = core.need(
    (res.get("arms") or {}).get(arm),
    ("iterations", "train_accuracy"),
    f"results.json arms[{arm!r}]",
  )
  acc = np.asarray(entry["train_accuracy"], np.float64)
  fin = entry.get("finished")
  ok = np.ones(len(acc), bool) if fin is None else np.asarray(fin, bool)
  return {"steps": np.asarray(entry["iterations"], np.float64), "acc": acc, "ok": ok}


def rise_index(steps, mean, q: float) -> int:
  """The first logged index after 0 where the curve `mean` covers fraction q of its rise from its
  first to its last value (the last index if it never does)."""
  mean = np.asarray(mean, np.float64)
  target = mean[0] + q * (mean[-1] - mean[0])
  hit = np.flatnonzero((np.asarray(steps) > 0) & (mean >= target))
  return int(hit[0]) if hit.size else len(mean) - 1


def whole_curve(a: Mapping[str, Any], b: Mapping[str, Any]) -> np.ndarray:
  """Per seed: the mean over logged iterations after 0 of a's accuracy minus b's."""
  later = a["steps"] > 0
  return (a["acc"][:, later] - b["acc"][:, later]).mean(1)


def combine(*gates: core.Gate) -> core.Gate:
  """Seeds in every gate's regime; the texts joined."""
  ok = np.logical_and.reduce([g.ok for g in gates])
  texts = [g.text for g in gates if not g.text.startswith("none")]
  return core.Gate(
    ok, "; ".join(dict.fromkeys(texts)) or "none", all(g.any_finished for g in gates)
  )


def downstream_gate(res: Mapping[str, Any]) -> core.Gate:
  """Fig 5's downstream regime: scratch's seed mean reaches SATURATED of its rise no earlier than
  EARLY of the run (otherwise the comparison only sees a brief transient)."""
  s = arm_curves(res, "scratch")
  if not s["ok"].any():
    return core.Gate(s["ok"], "no scratch seed finished", False)
  j = rise_index(s["steps"], s["acc"][s["ok"]].mean(0), SATURATED)
  frac = s["steps"][j] / s["steps"][-1]
  reached = frac >= EARLY
  return core.Gate(
    np.full(len(s["ok"]), reached),
    f"scratch reaches {SATURATED:.0%} of its rise at it {s['steps'][j]:g} = "
    f"{frac:.0%} of the run (≥ {EARLY:.0%})",
  )


def upstream_gate(res: Mapping[str, Any], memorised: bool = False) -> core.Gate:
  """The seeds whose upstream reached the regime: fitted (>= 2x chance) or memorised with later
  layers alive (`memorised`, Fig 1's negative transfer)."""
  up = res.get("upstream") or {}
  acc = up.get("train_accuracy")
  n = len(acc) if acc is not None else len(arm_curves(res, "scratch")["ok"])
  fin = core.finished(up, n)
  if memorised:
    dead = up.get("dead_fraction") or {}
    later = {k: v for k, v in list(dead.items())[1:]}  # every hidden layer after the first
    return core.memorised_gate(acc, later, fin)
  return core.fit_gate(acc, int(up.get("num_classes", 10)), fin)


def sigma_w_gate(res: Mapping[str, Any], n: int) -> core.Gate:
  """The covariance arms' regime: Sigma_w pooled over upstream seeds that fitted."""
  sw = res.get("sigma_w") or {}
  fitted = int(sw.get("num_fitted", 0))
  return core.Gate(
    np.full(n, fitted > 0),
    f"Σ_w pooled over {sw.get('num_seeds', '?')} upstream "
    f"seeds ({sw.get('seeds', 'unknown')}; {fitted} fitted)",
  )


def arm_gate(res, arm: str, config) -> core.Gate:
  """The regime gate of an arm's seeds in Fig 5 (see the module docstring)."""
  n = len(arm_curves(res, "scratch")["ok"])
  if arm in ("pretrained", "pretrained_no_rescaling", "pretrained_f_L2"):
    return upstream_gate(res)
  if arm.startswith("covariance") or arm == "f_only":
    return sigma_w_gate(res, n)
  return core.open_gate(n)


# ----------------------------------------------------------------------------------------------
# Fig 5 and section 2.5.


def faster_row(
  res,
  config,
  arm: str,
  ref: str,
  *,
  figure: str,
  claim_id: str,
  paper_text: str,
  claim: str | None = None,
) -> core.Row:
  """`arm` trains faster than `ref`: (i) the paired whole-curve difference arm - ref has its 95%
  t interval above 0; (ii) at each difficulty-matched iteration (where ref's seed mean covers
  MATCHED of its rise) the paired difference's interval is above 0.  Reproduced if all hold,
  partly if some, not reproduced if none."""
  a, b = arm_curves(res, arm), arm_curves(res, ref)
  gate = combine(arm_gate(res, arm, config), arm_gate(res, ref, config), downstream_gate(res))
  ok = a["ok"] & b["ok"] & gate.ok
  g = whole_curve(a, b)
  whole, every = core.interval(g[ok]), core.interval(g[a["ok"] & b["ok"]])
  ref_mean = b["acc"][b["ok"]].mean(0) if b["ok"].any() else b["acc"].mean(0)
  idx = [rise_index(b["steps"], ref_mean, q) for q in MATCHED]
  at = [core.paired(a["acc"][:, j], b["acc"][:, j], ok) for j in idx]
  tests = [core.excludes_zero(whole)] + [core.excludes_zero(d) for d in at]
  ours = (
    f"whole curve {arm}−{ref} {core.ci(whole)}; at the iterations where {ref} covers "
    + ", ".join(f"{q:.0%}" for q in MATCHED)
    + " of its rise ("
    + ", ".join(f"{b['steps'][j]:g}" for j in idx)
    + "): "
    + ", ".join(core.ci(d) for d in at)
  )
  if every["n"] != whole["n"]:
    ours += f"; every finished seed (no gate): whole curve {core.ci(every)}"
  rule = (
    "reproduced if all of: (i) paired whole-curve difference: 95% t interval above 0, (ii) "
    "the same at each difficulty-matched iteration; partly if some; not reproduced if none"
  )
  return core.Row(
    claim_id,
    figure,
    claim or f"{arm} trains faster than {ref}",
    paper_text,
    ours,
    rule,
    core.judge(tests, n=whole["n"], gate=gate, evaluable=bool((a["ok"] & b["ok"]).any())),
    n=whole["n"],
    gate=gate.text,
    plot=res.get("figure"),
  )


def most_of_row(res, config) -> core.Row:
  """Fig 5: the covariance arm accounts for most of the pretrained arm's advantage: the ratio of
  their whole-curve gains over scratch (seed-paired bootstrap 95% interval).  Reproduced if the
  interval's lower end >= MOST; partly if only the ratio is; not reproduced otherwise; not
  evaluable while pretrained's own gain is not resolved (nothing to account for)."""
  s, c, p = (arm_curves(res, a) for a in ("scratch", "covariance", "pretrained"))
  gate = combine(upstream_gate(res), sigma_w_gate(res, len(s["ok"])), downstream_gate(res))
  ok = s["ok"] & c["ok"] & p["ok"] & gate.ok
  g_cov, g_pre = whole_curve(c, s)[ok], whole_curve(p, s)[ok]
  pre = core.interval(g_pre)
  r = core.ratio_interval(g_cov, g_pre)
  ours = (
    f"covariance's gain / pretrained's (whole curve) {core.fmt(r['ratio'])} "
    f"[{core.fmt(r['lo'])}, {core.fmt(r['hi'])}] (bootstrap over n={r['n']} paired seeds); "
    f"pretrained's gain {core.ci(pre)}, covariance's {core.ci(core.interval(g_cov))}"
  )
  rule = (
    f"reproduced if the ratio's 95% interval lies above {MOST:g}; partly if only the ratio "
    f"≥ {MOST:g}; else not; not evaluable while pretrained's gain is not resolved"
  )
  verdict = core.judge(
    [r["lo"] >= MOST, r["ratio"] >= MOST], n=r["n"], gate=gate, evaluable=bool(ok.any())
  )
  if verdict in (core.REPRODUCED, core.PARTLY, core.NOT_REPRODUCED) and not core.excludes_zero(pre):
    verdict = core.NOT_EVALUABLE
  return core.Row(
    "fig5.covariance_most_of_pretrained",
    "Fig 5",
    "the first layer's covariance accounts for most of the pretrained advantage",
    "covariance ≈ pretrained > scratch: it 1000: 0.735 vs 0.745 (scratch 0.64): 90% of the gain",
    ours,
    rule,
    verdict,
    n=r["n"],
    gate=gate.text,
    plot=res.get("figure"),
  )


def _paper_pair(arm: str, ref: str) -> str:
  p = paper.FIG5
  return "; ".join(
    f"it {it}: {p[arm][i]:g} vs {p[ref][i]:g} ({p[arm][i] - p[ref][i]:+.3f})"
    for i, it in enumerate(p["iterations"])
  )


def f_layer_row(res: Mapping[str, Any], layer: str) -> core.Row:
  """Section 2.5 diagnostic (outside the tally): is the pretrained network's f_l resolved from its
  init level?  departure = RMS(f_l - f_l at init), noise = RMS(f_l of one half of the seeds - of
  the other) / 2, both relative to the init level, on the pooled f_l's lambda knots."""
  tf = res["transfer_functions"]

  def on_grid(entry, grid):
    lam, f = np.asarray(entry["lambda"], np.float64), np.asarray(entry["f"], np.float64)
    keep = (lam > 0) & np.isfinite(f)
    order = np.argsort(lam[keep])
    return np.interp(np.log(grid), np.log(lam[keep][order]), f[keep][order])

  grid = np.asarray(tf[layer]["lambda"], np.float64)
  grid = grid[grid > 0]
  f, f0 = on_grid(tf[layer], grid), on_grid(tf[f"{layer}@init"], grid)
  h0, h1 = on_grid(tf[f"{layer}@half0"], grid), on_grid(tf[f"{layer}@half1"], grid)
  level = float(np.mean(np.abs(f0)))
  dep = float(np.sqrt(np.mean((f - f0) ** 2))) / level
  noise = float(np.sqrt(np.mean((h0 - h1) ** 2))) / 2 / level
  ours = (
    f"f_{layer} departs from its init level ({core.fmt(level)}) by {core.fmt(dep)} (RMS, "
    f"relative); split-half noise {core.fmt(noise)}: "
    f"{'resolved' if dep > 2 * noise else 'not resolved'} (departure > 2 × noise); f range "
    f"{core.fmt(float(f.min()))}..{core.fmt(float(f.max()))} over {len(grid)} λ knots"
  )
  return core.Row(
    f"fig5.f_{layer}",
    "§2.5",
    f"the pretrained network's f_{layer} is resolved "
    "from its init level (what sampling that layer can carry)",
    "f_l measured on the pretrained network",
    ours,
    "diagnostic (outside the tally)",
    core.DESCRIBED,
    plot=res.get("figure"),
    section=core.DIAGNOSTICS,
  )


@core.figure("fig5", "Fig 5 / §2.5")
def fig5(run: Mapping[str, Any]) -> list[core.Row]:
  """Fig 5 and section 2.5 rows for the arms the run has."""
  res, config = run.get("results") or {}, run.get("config") or {}
  arms = core.need(res.get("arms"), ("scratch",), "results.json arms")
  note = (
    ""
    if (config.get("downstream") or {}).get("labels", "real") == "real"
    else " (paper: real labels downstream; this run: random)"
  )
  rows = [
    faster_row(
      res,
      config,
      arm,
      "scratch",
      figure="Fig 5",
      claim_id=f"fig5.{arm}_faster",
      paper_text=_paper_pair(arm, "scratch") + note,
    )
    for arm in ("pretrained_no_rescaling", "pretrained", "covariance")
    if arm in arms
  ]
  if "covariance" in arms and "pretrained" in arms:
    rows.append(most_of_row(res, config))
  if "pretrained_no_rescaling" in arms and "pretrained" in arms:
    rows.append(
      faster_row(
        res,
        config,
        "pretrained_no_rescaling",
        "pretrained",
        figure="Fig 5",
        claim_id="fig5.weight_scaling",
        paper_text=_paper_pair("pretrained_no_rescaling", "pretrained") + note,
        claim="weight scaling: no rescaling trains faster than pretrained (rescaled)",
      )
    )
  if "covariance" in arms and "covariance_rotated" in arms:
    rows.append(
      faster_row(
        res,
        config,
        "covariance",
        "covariance_rotated",
        figure="Fig 5 (control)",
        claim_id="fig5.alignment_not_spectrum",
        paper_text="not in the paper: our control, N(0, QΣ_wQᵀ) with Q Haar-random (same "
        "spectrum and scale, no alignment)",
        claim="the eigenvector alignment, not the spectrum, carries the transfer: covariance "
        "trains faster than covariance_rotated",
      )
    )
  for arm in sorted(a for a in arms if a.startswith("covariance_L") and "covariance" in arms):
    rows.append(
      faster_row(
        res,
        config,
        arm,
        "covariance",
        figure="§2.5",
        claim_id=f"fig5.{arm}_faster",
        paper_text="covariance_L2/L3 speed up further than covariance (qualitative)",
      )
    )
  if "pretrained_f_L2" in arms and "pretrained" in arms:
    rows.append(
      faster_row(
        res,
        config,
        "pretrained_f_L2",
        "pretrained",
        figure="§2.5",
        claim_id="fig5.pretrained_f_L2_faster",
        paper_text="sampling layer 2 "
        "from f_2 speeds up further (qualitative; this arm keeps layer 1 "
        "pretrained)",
      )
    )
  tf = res.get("transfer_functions") or {}
  rows += [
    f_layer_row(res, layer)
    for layer in sorted(tf)
    if "@" not in layer and f"{layer}@half1" in tf and f"{layer}@init" in tf
  ]
  return rows


# ----------------------------------------------------------------------------------------------
# Fig 1 and Table 1.


def fig1_row(
  res: Mapping[str, Any], arm: str, direction: str, labels: str, figure: str
) -> core.Row:
  """Fig 1 (sections 2.4 and 3): after random-label pretraining a network trains faster
  (positive) or slower (negative) than from scratch over most of downstream training.  Tests on
  the gated seeds: (i) the paired whole-curve difference arm - scratch has its 95% t interval on
  the claimed side of 0; (ii) the paired interval is on that side at >= half of the logged
  iterations after 0.  Negative transfer is judged only where the upstream memorised with its
  later layers alive (`core.memorised_gate`); positive where it fitted (`core.fit_gate`)."""
  a, s = arm_curves(res, arm), arm_curves(res, "scratch")
  sign = 1.0 if direction == "positive" else -1.0
  gate = upstream_gate(res, memorised=direction == "negative")
  ok = a["ok"] & s["ok"] & gate.ok
  whole = core.interval(whole_curve(a, s)[ok])
  later = np.flatnonzero(a["steps"] > 0)
  hits = sum(
    core.excludes_zero(core.paired(a["acc"][:, j], s["acc"][:, j], ok), sign) for j in later
  )
  tests = [core.excludes_zero(whole, sign), 2 * hits >= len(later)]
  word = "faster" if direction == "positive" else "slower"
  ours = (
    f"whole curve {arm}−scratch {core.ci(whole)}; interval {'above' if sign > 0 else 'below'}"
    f" 0 at {hits}/{len(later)} logged iterations"
  )
  every = core.interval(whole_curve(a, s)[a["ok"] & s["ok"]])
  if every["n"] != whole["n"]:  # what the seeds outside the regime did: shown, not judged
    ours += f"; every finished seed (no gate, not judged): whole curve {core.ci(every)}"
  rule = (
    f"reproduced if both: (i) paired whole-curve {arm}−scratch: 95% t interval "
    f"{'above' if sign > 0 else 'below'} 0, (ii) the same at ≥ half of the logged "
    "iterations; partly if one; not reproduced if none"
  )
  return core.Row(
    f"{figure.lower().replace(' ', '')}.{direction}.{arm}",
    figure,
    f"{direction} transfer: {arm} trains {word} than scratch ({labels} labels downstream)",
    f"pretrained {word} than scratch over most of training (qualitative)",
    ours,
    rule,
    core.judge(tests, n=whole["n"], gate=gate, evaluable=bool((a["ok"] & s["ok"]).any())),
    n=whole["n"],
    gate=gate.text,
    plot=res.get("figure"),
  )


def _fig1_rows(run: Mapping[str, Any], figure: str, direction: str) -> list[core.Row]:
  res = run.get("results") or {}
  arms = core.need(res.get("arms"), ("scratch",), "results.json arms")
  labels = ((run.get("config") or {}).get("downstream") or {}).get("labels", "real")
  return [
    fig1_row(res, arm, direction, labels, figure)
    for arm in ("pretrained", "pretrained_no_rescaling")
    if arm in arms
  ]


@core.figure("fig1", "Fig 1")
def fig1(run: Mapping[str, Any]) -> list[core.Row]:
  direction = ((run.get("results") or {}).get("claims") or {}).get("direction", "positive")
  return _fig1_rows(run, "Fig 1", direction)


@core.figure("table1", "Table 1")
def table1(run: Mapping[str, Any]) -> list[core.Row]:
  return _fig1_rows(run, "Table 1", "positive")
