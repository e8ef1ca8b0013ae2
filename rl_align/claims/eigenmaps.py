"""Claims of the eigenvalue-map runs: Fig 2 (misalignment), Fig 4 centre/right (f over epochs),
Fig 20 (f on Gaussian data).  A run holds one panel per label kind (`run["panels"]`:
{name: {"results", "config"}}); each panel gives its rows.

Random-label panels are judged on the seeds that fitted their labels (`core.fit_gate`); every
statistic is over seeds with a Student-t interval (`core`).
"""

from typing import Any, Mapping

import numpy as np

from rl_align.claims import core
from rl_align.claims import paper

FAR_BELOW = 0.5  # Fig 2: eigenbasis excess over the floor <= this fraction of the random's
FLAT_EARLY = 0.25  # Fig 4: rise at ~25% of training < this fraction of the final peak's rise
BASELINE = 0.2  # Fig 4: f at the largest lambda within this fraction of the peak's rise
FIG20_GOOD, FIG20_FAIR = 0.05, 0.15  # Fig 20: RMSE / the paper curve's level


def panels(run: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """{panel name: {"results", "config"}} of an eigenvalue-map run (its summary lists them)."""
  res = run.get("results") or {}
  names = [k for k, v in res.items() if isinstance(v, dict) and "checks" in v]
  have = run.get("panels") or {}
  missing = [n for n in names if (have.get(n) or {}).get("results") is None]
  if missing or not names:
    raise core.ReportError(
      f"{run.get('name')}: panel results {missing or '(none listed)'} are missing "
      "(WORKDIR/<panel>/results.json). Fix: rerun the binary on that workdir (it resumes) so "
      "every panel finishes."
    )
  return {n: have[n] for n in names}


def gate_of(res: Mapping[str, Any], cfg: Mapping[str, Any], n: int) -> core.Gate:
  """Random labels: the fit gate; real labels: every finished seed."""
  ok = core.finished(res, n)
  if cfg.get("labels", "random") == "random":
    return core.fit_gate(res.get("train_accuracy"), int(cfg.get("num_classes", 10)), ok)
  return core.Gate(ok, f"real labels (train accuracy {core.fmt(_mean(res, ok))})", bool(ok.any()))


def shown(gate: core.Gate, res: Mapping[str, Any], n: int) -> np.ndarray:
  """The seeds a row's numbers describe: those in the regime, or (regime not reached, so the
  verdict says so) every finished seed, so that the row still shows what the run did."""
  return gate.ok if gate.reached else core.finished(res, n)


def _n(gate: core.Gate, n: int) -> int:
  """A row's n: the seeds in the regime (0 when it was not reached)."""
  return n if gate.reached else 0


def _mean(res, ok) -> float:
  acc = res.get("train_accuracy")
  return (
    float(np.mean(np.asarray(acc, np.float64)[ok]))
    if acc is not None and ok.any()
    else float("nan")
  )


# ----------------------------------------------------------------------------------------------
# Fig 2.


def fig2_row(panel: str, res: Mapping[str, Any], cfg: Mapping[str, Any], plot: str) -> core.Row:
  """Fig 2 (section 2.1): for real and random labels, the first layer's misalignment in the data
  eigenbasis stays far below its misalignment in a random basis.  Over the gated seeds, at the end
  of training: (i) the paired difference random - eigen has its t interval above 0; (ii) "far
  below": the seed-mean excess of the eigenbasis over the finite-sample floor is at most
  FAR_BELOW x the random basis' excess; (iii) "stays": the seed-mean eigenbasis value is below the
  random basis' at every snapshot of the second half of training."""
  core.need(
    res,
    ("misalignment_eigenbasis", "misalignment_random_basis", "misalignment_floor", "snapshots"),
    f"{panel}/results.json",
  )
  eig = np.asarray(res["misalignment_eigenbasis"], np.float64)
  rnd = np.asarray(res["misalignment_random_basis"], np.float64)
  gate = gate_of(res, cfg, len(eig))
  ok = shown(gate, res, len(eig))
  d = core.paired(rnd, eig, ok)
  floor = res["misalignment_floor"]
  ex_e = float(np.mean(eig[ok]) - floor["mean"]) if ok.any() else float("nan")
  ex_r = float(np.mean(rnd[ok]) - floor["mean"]) if ok.any() else float("nan")
  far = bool(ex_r > 0 and ex_e <= FAR_BELOW * ex_r)
  last = max(s["step"] for s in res["snapshots"])
  late = [s for s in res["snapshots"] if s["step"] >= last / 2]
  stays = (
    sum(
      float(np.mean(np.asarray(s["misalignment_eigenbasis"], np.float64)[ok]))
      < float(np.mean(np.asarray(s["misalignment_random_basis"], np.float64)[ok]))
      for s in late
    )
    if ok.any()
    else 0
  )
  tests = [core.excludes_zero(d), far, bool(late) and stays == len(late)]
  ours = (
    f"final, seed mean eigenbasis {core.fmt(ex_e + floor['mean'])} vs random basis "
    f"{core.fmt(ex_r + floor['mean'])}; paired random−eigen {core.ci(d)}; per-seed floor "
    f"{core.fmt(floor['mean'])} ± {core.fmt(floor['std'])} std, excess over it "
    f"{core.fmt(ex_e)} vs {core.fmt(ex_r)}; eigen < random at {stays}/{len(late)} late "
    f"snapshots; pooled over seeds {core.fmt(res.get('misalignment_pooled_eigenbasis'))} vs "
    f"{core.fmt(res.get('misalignment_pooled_random_basis'))}"
  )
  rule = (
    "reproduced if all of: (i) paired random − eigen: 95% t interval above 0, (ii) eigen's "
    f"excess over the finite-sample floor ≤ {FAR_BELOW:g} × random's, (iii) eigen < random "
    "(seed means) at every snapshot of the second half of training; partly if one or two; "
    "not reproduced if none"
  )
  return core.Row(
    f"fig2.{panel}",
    "Fig 2",
    "misalignment in the data eigenbasis stays far below "
    f"the random-basis misalignment ({panel} labels)",
    "eigenbasis ≪ random basis over training, real and random labels (qualitative)",
    ours,
    rule,
    core.judge(tests, n=d["n"], gate=gate),
    n=_n(gate, d["n"]),
    gate=gate.text,
    plot=plot,
  )


# ----------------------------------------------------------------------------------------------
# Fig 4 centre / right.


def f_epochs(res: Mapping[str, Any], ok: np.ndarray) -> dict[str, Any]:
  """Per snapshot (epoch order): epoch and f [S_ok, d] of the seeds in `ok`; lambda descending."""
  core.need(res, ("eigenvalues", "snapshots"), "results.json")
  snaps = sorted(res["snapshots"], key=lambda s: s["step"])
  return {
    "epochs": [float(s["epoch"]) for s in snaps],
    "f": [np.asarray(s["f"], np.float64)[ok] for s in snaps],
    "lam": np.asarray(res["eigenvalues"], np.float64),
  }


def fig4_rows(
  panel: str, res: Mapping[str, Any], cfg: Mapping[str, Any], plot: str
) -> list[core.Row]:
  """Fig 4 centre/right (section 2.3): the shape claim of the panel's label kind (in the tally)
  and the magnitude of its final peak beside the paper's (descriptive)."""
  labels = cfg.get("labels", panel)
  n = len(np.asarray(res["f"]))
  gate = gate_of(res, cfg, n)
  ep = f_epochs(res, shown(gate, res, n))
  shape = (fig4_random if labels == "random" else fig4_real)(panel, ep, gate, plot)
  return [shape, fig4_magnitude(panel, labels, ep, gate, plot)]


def _peak(f: np.ndarray) -> int:
  return int(np.argmax(f.mean(0)))


def fig4_random(panel: str, ep: Mapping[str, Any], gate: core.Gate, plot: str) -> core.Row:
  """Random labels: f stays flat early (until epoch 10 of 40), then peaks at a small lambda and is
  back at its init level at the largest lambda (mean brightness).  Tests over the gated seeds:
  (i) at the snapshot nearest 25% of training the seed-mean f rose by < FLAT_EARLY x the final
  peak's rise over its init level; (ii) final f at the peak minus f at the largest lambda: paired
  t interval above 0; (iii) f at the largest lambda within BASELINE x the peak's rise of the init
  level ("back to baseline")."""
  f0, fT, lam = ep["f"][0], ep["f"][-1], ep["lam"]
  n = len(fT)
  claim = "random labels: f flat early, then a peak, back to baseline at the largest λ"
  paper_text = "flat until epoch 10; epoch 40 peak ≈0.10 at λ≈0.25; baseline at the largest λ≈20"
  rule = (
    f"reproduced if all of: (i) rise at ~25% of training < {FLAT_EARLY:g} × the final "
    "peak's rise, (ii) peak − f(largest λ): paired 95% t interval above 0, (iii) f(largest "
    f"λ) within {BASELINE:g} × the peak's rise of the init level; partly if one or two; not "
    "reproduced if none"
  )
  if not n:
    return core.Row(
      f"fig4.{panel}.shape",
      "Fig 4",
      claim,
      paper_text,
      "no seed in the regime",
      rule,
      core.judge([False], n=0, gate=gate),
      n=0,
      gate=gate.text,
      plot=plot,
    )
  base = float(f0.mean())
  j = _peak(fT)
  rise = float(fT[:, j].mean()) - base
  q = int(np.argmin(np.abs(np.asarray(ep["epochs"]) - 0.25 * ep["epochs"][-1])))
  early = float((ep["f"][q].mean(0) - base).max())
  top = core.paired(fT[:, j], fT[:, 0])
  back = float(fT[:, 0].mean()) - base
  tests = [
    rise > 0 and early < FLAT_EARLY * rise,
    j != 0 and core.excludes_zero(top),
    rise > 0 and abs(back) <= BASELINE * rise,
  ]
  ours = (
    f"init level {core.fmt(base)}; epoch {ep['epochs'][q]:g}: max rise {core.fmt(early)}; "
    f"epoch {ep['epochs'][-1]:g}: peak {core.fmt(fT[:, j].mean())} (rise {core.fmt(rise)}) "
    f"at λ={core.fmt(lam[j])} (rank {j + 1} of {len(lam)}); at the largest λ="
    f"{core.fmt(lam[0])}: {core.fmt(fT[:, 0].mean())}, {core.fmt(back / rise if rise else np.nan, 2)}"
    f" of the rise above init; peak − largest-λ {core.ci(top)}"
  )
  return core.Row(
    f"fig4.{panel}.shape",
    "Fig 4",
    claim,
    paper_text,
    ours,
    rule,
    core.judge(tests, n=n, gate=gate),
    n=_n(gate, n),
    gate=gate.text,
    plot=plot,
  )


def fig4_real(panel: str, ep: Mapping[str, Any], gate: core.Gate, plot: str) -> core.Row:
  """Real labels: f grows steadily over training.  Tests: (i) the seed-mean peak f rises from
  every snapshot to the next; (ii) per seed, final f at the peak minus the init level: t interval
  above 0."""
  fT = ep["f"][-1]
  n = len(fT)
  claim, paper_text = (
    "real labels: f grows steadily over training",
    "grows steadily; epoch 40 peak ≈0.024 at λ≈1.1",
  )
  rule = (
    "reproduced if both: (i) the seed-mean peak f rises at every snapshot, (ii) final peak − "
    "init level: 95% t interval above 0; partly if one; not reproduced if none"
  )
  if not n:
    return core.Row(
      f"fig4.{panel}.shape",
      "Fig 4",
      claim,
      paper_text,
      "no finished seed",
      rule,
      core.NOT_EVALUABLE,
      n=0,
      gate=gate.text,
      plot=plot,
    )
  base = float(ep["f"][0].mean())
  peaks = [float(f.mean(0).max()) for f in ep["f"]]
  j = _peak(fT)
  grown = core.interval(fT[:, j] - base)
  tests = [all(b > a for a, b in zip(peaks, peaks[1:])), core.excludes_zero(grown)]
  ours = (
    f"seed-mean peak f at epochs {', '.join(f'{e:g}' for e in ep['epochs'])}: "
    f"{', '.join(core.fmt(p) for p in peaks)}; final peak − init {core.ci(grown)} at "
    f"λ={core.fmt(ep['lam'][j])}"
  )
  return core.Row(
    f"fig4.{panel}.shape",
    "Fig 4",
    claim,
    paper_text,
    ours,
    rule,
    core.judge(tests, n=n, gate=gate),
    n=_n(gate, n),
    gate=gate.text,
    plot=plot,
  )


def fig4_magnitude(
  panel: str, labels: str, ep: Mapping[str, Any], gate: core.Gate, plot: str
) -> core.Row:
  """Descriptive: the final peak of f and where it sits in the spectrum (its rank and its lambda
  relative to the largest one), beside the paper's epoch-40 values; lambdas of different datasets
  are compared by their place in the spectrum, not by value."""
  ref = paper.FIG4.get(labels)
  fT, lam = ep["f"][-1], ep["lam"]
  claim = f"{labels} labels: magnitude and place of the epoch-40 peak of f"
  if ref is None or not len(fT):
    return core.Row(
      f"fig4.{panel}.magnitude",
      "Fig 4",
      claim,
      "n/a",
      "no seed in the regime" if ref else f"label kind {labels!r}",
      "descriptive",
      core.DESCRIBED,
      n=len(fT),
      gate=gate.text,
      plot=plot,
      section=core.DESCRIPTIVE,
    )
  j = _peak(fT)
  pk = core.interval(fT[:, j])
  ours = (
    f"peak {core.ci(pk)} at λ={core.fmt(lam[j])}, rank {j + 1} of {len(lam)}, "
    f"λ/λ_max = {core.fmt(lam[j] / lam[0])}; ×{core.fmt(pk['mean'] / ref['peak_f'], 2)} the "
    "paper's peak f"
  )
  paper_text = (
    f"peak f ≈{ref['peak_f']:g} at λ≈{ref['peak_lambda']:g} of λ_max≈"
    f"{ref['largest_lambda']:g} (λ/λ_max ≈ {ref['peak_lambda'] / ref['largest_lambda']:.3g};"
    " CIFAR10)"
  )
  return core.Row(
    f"fig4.{panel}.magnitude",
    "Fig 4",
    claim,
    paper_text,
    ours,
    "descriptive (outside the tally)",
    core.DESCRIBED,
    n=len(fT),
    gate=gate.text,
    plot=plot,
    section=core.DESCRIPTIVE,
  )


# ----------------------------------------------------------------------------------------------
# Fig 20.


def fig20_row(panel: str, res: Mapping[str, Any], cfg: Mapping[str, Any], plot: str) -> core.Row:
  """Fig 20 (appendix; Fig 4 left): f of dense nets on Gaussian data matches the paper's curve.
  The RMSE of the gated seeds' mean f (interpolated at the paper's sigmas) against the paper's
  values, relative to the paper curve's mean level: reproduced if <= FIG20_GOOD (about the
  precision of reading values off the plot), partly if <= FIG20_FAIR, not reproduced otherwise."""
  claim = f"f on Gaussian data matches the paper's curve ({panel} panel)"
  reference = cfg.get("paper_reference")
  rule = (
    f"reproduced if RMSE ≤ {FIG20_GOOD:.0%} of the paper curve's mean level; partly if ≤ "
    f"{FIG20_FAIR:.0%}; else not"
  )
  if not reference:
    return core.Row(
      f"fig20.{panel}",
      "Fig 20",
      claim,
      "n/a",
      "the panel's config has no "
      "paper_reference (the paper's values exist for the std reading only)",
      rule,
      core.NOT_EVALUABLE,
      plot=plot,
    )
  core.need(res, ("sigma", "f"), f"{panel}/results.json")
  sigma = np.asarray(res["sigma"], np.float64)
  f_all = np.asarray(res["f"], np.float64)
  gate = gate_of(res, cfg, len(f_all))
  f = f_all[shown(gate, res, len(f_all))]
  order = np.argsort(sigma)
  rs, rf = np.asarray(reference["sigma"], np.float64), np.asarray(reference["f"], np.float64)
  rmse = lambda g: float(np.sqrt(np.mean((np.interp(rs, sigma[order], g[order]) - rf) ** 2)))
  level = float(rf.mean())
  rel = rmse(f.mean(0)) / level if len(f) else float("nan")
  per_seed = core.interval([rmse(g) for g in f])
  ours = (
    f"RMSE of the seed-mean f {core.fmt(rel * level)} = {100 * rel:.1f}% of the paper's "
    f"level {core.fmt(level)}; per-seed RMSE {core.ci(per_seed)}"
  )
  paper_text = (
    f"f({core.fmt(rs[0], 2)}..{core.fmt(rs[-1], 2)}) = "
    f"{', '.join(core.fmt(v) for v in rf)} (read off Fig 20)"
  )
  verdict = core.judge([rel <= FIG20_GOOD, rel <= FIG20_FAIR], n=len(f), gate=gate)
  return core.Row(
    f"fig20.{panel}",
    "Fig 20",
    claim,
    paper_text,
    ours,
    rule,
    verdict,
    n=_n(gate, len(f)),
    gate=gate.text,
    plot=plot,
  )


# ----------------------------------------------------------------------------------------------
# The registered figures.


def _rows(run: Mapping[str, Any], make) -> list[core.Row]:
  plot = (run.get("config") or {}).get("figure_name")
  out = []
  for name, p in panels(run).items():
    got = make(name, p["results"], p.get("config") or {}, plot)
    out += got if isinstance(got, list) else [got]
  return out


@core.figure("fig2", "Fig 2")
def fig2(run: Mapping[str, Any]) -> list[core.Row]:
  return _rows(run, fig2_row)


@core.figure("fig4", "Fig 4 centre/right")
def fig4(run: Mapping[str, Any]) -> list[core.Row]:
  return _rows(run, fig4_rows)


@core.figure("fig20", "Fig 20")
def fig20(run: Mapping[str, Any]) -> list[core.Row]:
  return _rows(run, fig20_row)
