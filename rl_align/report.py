"""The README's claims table, built from run workdirs: one row per claim of the paper a run tests.

Pure logic (numpy only, no I/O): every function takes dicts already read from a workdir; the binary
`experiments/report.py` reads them and writes report.md.  A run is a dict::

    {"name": "workdirs/fig5",                  # how the report names it (its path)
     "results": {...}, "config": {...},          # WORKDIR/results.json, config.json
     "run": {...} or None,                       # WORKDIR/run.json (command, wall time, machine)
     "panels": {name: {"results", "config"}}}    # WORKDIR/<panel>/ of the eigenvalue-map binaries

    from rl_align import report
    rows = report.claims(run)          # [{figure, claim, paper, ours, rule, verdict, plot}]
    text = report.render([run], rows)

Every verdict is one of VERDICTS and follows the rule written in its row.  Uncertainties are over
seeds: SE = sample std (ddof 1) / sqrt(n); paired statistics (`paired`) pair seed i of one arm with
seed i of the other (the transfer arms share seed i's data order) and keep the pairs where both
finished.  Paper: Maennel et al. 2020, "What Do Neural Networks Learn When Trained With Random
Labels?" (arXiv 2006.10455); the figure / section a rule tests is named in its function.
"""
import shlex
from typing import Any, Mapping, Sequence

import numpy as np

from rl_align import errors

REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_EVALUABLE = (
    "reproduced", "partly", "not reproduced", "not evaluable")
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_EVALUABLE)
Z = 2.0             # "beyond Z standard errors"
EQUIV_MARGIN = 0.02  # Fig 5 covariance ~ pretrained: the project's tolerance (transfer.fig5_checks)

# The paper's numbers (read off its figures; the configs' docstrings quote the same).
PAPER_FIG5 = {"iterations": (1000, 2000), "downstream_steps": 4500,
              "pretrained_no_rescaling": (0.78, 0.915), "pretrained": (0.745, 0.885),
              "covariance": (0.735, 0.88), "scratch": (0.64, 0.79)}
PAPER_FIG4 = {"random": {"peak_f": 0.10, "peak_lambda": 0.25},
              "real": {"peak_f": 0.024, "peak_lambda": 1.1}}

# config.json figure_name -> figure key (Fig 3 and section 3 are told by their results' keys).
_FIGURE_NAMES = {"fig2_misalignment.png": "fig2", "fig20.png": "fig20", "fig4_cnn.png": "fig4",
                 "fig5.png": "fig5", "fig1.png": "fig1", "imagenet.png": "table1"}
_CONFIG_FILES = {"fig2": "fig2", "fig20": "fig20", "fig4_cnn": "fig4", "fig3": "fig3",
                 "fig5": "fig5", "fig1": "fig1", "imagenet": "table1",
                 "specialization": "specialization"}
TITLES = {"fig1": "Fig 1", "fig2": "Fig 2", "fig3": "Fig 3", "fig4": "Fig 4 centre/right",
          "fig5": "Fig 5 / §2.5", "fig20": "Fig 20", "table1": "Table 1",
          "specialization": "§3", "fig1_search": "Fig 1 search"}


class ReportError(errors.RLAlignError):
  """A workdir the report cannot read (unknown figure, missing field); the message says the fix."""


# ----------------------------------------------------------------------------------------------
# Statistics.


def mean_se(x) -> dict[str, float]:
  """Mean, sample std (ddof 1), standard error and n of the finite values of x (SE nan if n < 2)."""
  x = np.asarray(x, np.float64).reshape(-1)
  x = x[np.isfinite(x)]
  n = len(x)
  if n == 0:
    return {"mean": float("nan"), "std": float("nan"), "se": float("nan"), "n": 0}
  std = float(x.std(ddof=1)) if n > 1 else float("nan")
  return {"mean": float(x.mean()), "std": std, "se": std / np.sqrt(n), "n": n}


def paired(a, b, ok_a=None, ok_b=None) -> dict[str, Any]:
  """Paired difference a - b over seeds (seed i with seed i), both finished: `mean_se` of the
  per-seed differences plus `diffs`.  a, b: [S] or [S, T] (then per column: arrays)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  n = min(len(a), len(b))
  ok = np.ones(n, bool)
  for flags in (ok_a, ok_b):
    if flags is not None:
      ok &= np.asarray(flags, bool)[:n]
  d = a[:n][ok] - b[:n][ok]
  if d.ndim == 1:
    return {**mean_se(d), "diffs": d}
  k = len(d)
  std = d.std(0, ddof=1) if k > 1 else np.full(d.shape[1:], np.nan)
  mean = d.mean(0) if k else np.full(d.shape[1:], np.nan)
  return {"mean": mean, "std": std, "se": std / np.sqrt(max(k, 1)), "n": k, "diffs": d}


def above(stat: Mapping[str, Any], z: float = Z) -> bool:
  """True when stat's mean exceeds z standard errors (False if the SE is undefined)."""
  m, se = np.asarray(stat["mean"]), np.asarray(stat["se"])
  return bool(np.all(np.isfinite(se)) and np.all(m > z * se))


def fmt(x, digits: int = 3) -> str:
  """A number for the table (nan / None as 'n/a'; large or tiny values in %g)."""
  if x is None or not np.isfinite(x):
    return "n/a"
  x = float(x)
  return f"{x:.{digits}g}" if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3) else f"{x:.{digits}f}"


def pm(stat: Mapping[str, Any], kind: str = "SE") -> str:
  """'mean ± SE (n seeds)' of a `mean_se` / `paired` result."""
  return f"{fmt(stat['mean'])} ± {fmt(stat['se'] if kind == 'SE' else stat['std'])} {kind} " \
         f"(n={stat['n']} seeds)"


def row(figure: str, claim: str, paper: str, ours: str, rule: str, verdict: str,
        plot: str | None) -> dict[str, Any]:
  """One claims-table row (verdict checked against VERDICTS)."""
  if verdict not in VERDICTS:
    raise ValueError(f"verdict {verdict!r} is not one of {VERDICTS}")
  return {"figure": figure, "claim": claim, "paper": paper, "ours": ours, "rule": rule,
          "verdict": verdict, "plot": plot}


def count_verdict(hits: int, total: int, evaluable: bool = True) -> str:
  """reproduced if every one of `total` tests holds, partly if some, not reproduced if none."""
  if not evaluable or total == 0:
    return NOT_EVALUABLE
  return REPRODUCED if hits == total else (PARTLY if hits else NOT_REPRODUCED)


# ----------------------------------------------------------------------------------------------
# Which figure a workdir holds.


def _config_file(run: Mapping[str, Any]) -> str | None:
  """The config file's stem from run.json's command line (`--config=experiments/configs/X.py:a`)."""
  for a in (run.get("run") or {}).get("argv", [])[1:]:
    if str(a).startswith("--config="):
      path = str(a)[len("--config="):].split(":")[0]
      return path.rsplit("/", 1)[-1].removesuffix(".py")
  return None


def figure_of(run: Mapping[str, Any]) -> str:
  """The figure key (a key of TITLES) of a run: config.json's figure_name, else the results'
  shape (Fig 3: subspace overlaps; section 3: sweep points), else run.json's --config file."""
  cfg, res = run.get("config") or {}, run.get("results") or {}
  name = cfg.get("figure_name")
  if name in _FIGURE_NAMES:
    return _FIGURE_NAMES[name]
  if "subspace_overlap" in res:
    return "fig3"
  if "points" in res and "highlight" in res:
    return "fig1_search" if (cfg.get("model") or {}).get("name") == "vgg16" else "specialization"
  stem = _config_file(run)
  if stem in _CONFIG_FILES:
    return _CONFIG_FILES[stem]
  raise ReportError(
      f"{run.get('name', 'the workdir')} holds a run the report does not know (config figure_name="
      f"{name!r}, config file {stem!r}, results.json keys {sorted(res)[:6]}). Fix: pass "
      "workdirs of the paper's figures: experiments.misalignment (fig2.py), "
      "experiments.eigenvalue_map (fig20.py, fig4_cnn.py), experiments.filters (fig3.py), "
      "experiments.transfer (fig1.py, fig5.py, imagenet.py) or experiments.specialization.")


def _need(d: Mapping[str, Any] | None, keys: Sequence[str], where: str) -> Mapping[str, Any]:
  """d itself when it has every key; a ReportError naming the missing ones otherwise."""
  missing = [k for k in keys if d is None or k not in d]
  if missing:
    raise ReportError(f"{where} lacks {missing}. Fix: rerun the binary on that workdir (it resumes "
                      "and rewrites results.json), or pass a workdir of a finished run.")
  return d


def _finished(res: Mapping[str, Any], n: int) -> np.ndarray:
  div = res.get("diverged")
  return np.ones(n, bool) if div is None else ~np.asarray(div, bool).reshape(-1)[:n]


# ----------------------------------------------------------------------------------------------
# Fig 2: misalignment in the data eigenbasis vs a random basis.


def fig2_row(panel: str, res: Mapping[str, Any], plot: str) -> dict[str, Any]:
  """Fig 2 (section 2.1): for real and random labels, the first layer's misalignment in the data
  eigenbasis stays far below its misalignment in a random basis.  Tests, at the end of training:
  (i) every finished seed's gap (random - eigen) exceeds Z x the finite-sample floor's std (the
  sampling noise of a misalignment estimated from that many filters); (ii) the pooled gap exceeds
  Z x the pooled floor's std; (iii) pooled eigenbasis < random basis at every snapshot of the
  second half of training ("stays")."""
  keys = ("misalignment_eigenbasis", "misalignment_random_basis", "misalignment_floor",
          "misalignment_pooled_eigenbasis", "misalignment_pooled_random_basis",
          "misalignment_pooled_floor", "snapshots")
  _need(res, keys, f"{panel}/results.json")
  eig = np.asarray(res["misalignment_eigenbasis"], np.float64)
  rnd = np.asarray(res["misalignment_random_basis"], np.float64)
  ok = _finished(res, len(eig))
  floor, pfloor = res["misalignment_floor"], res["misalignment_pooled_floor"]
  seed_ok = (rnd - eig)[ok] > Z * floor["std"]
  pe, pr = res["misalignment_pooled_eigenbasis"], res["misalignment_pooled_random_basis"]
  pooled_ok = pr - pe > Z * pfloor["std"]
  last = max(s["step"] for s in res["snapshots"])
  late = [s for s in res["snapshots"] if s["step"] >= last / 2]
  stays = sum(s["misalignment_pooled_eigenbasis"] < s["misalignment_pooled_random_basis"]
              for s in late)
  per_seed = ", ".join(f"{fmt(e)}/{fmt(r)}" for e, r in zip(eig[ok], rnd[ok]))
  ours = (f"final, eigenbasis/random basis per seed: {per_seed}; paired random−eigen "
          f"{pm(paired(rnd, eig, ok, ok))}; per-seed floor {fmt(floor['mean'])} ± "
          f"{fmt(floor['std'])}; pooled {fmt(pe)} vs {fmt(pr)} (pooled floor "
          f"{fmt(pfloor['mean'])} ± {fmt(pfloor['std'])}); pooled eigen < random at "
          f"{stays}/{len(late)} late snapshots")
  rule = (f"reproduced if all of: (i) random − eigen > {Z:g} × floor std in every seed, (ii) "
          f"pooled random − eigen > {Z:g} × pooled floor std, (iii) pooled eigen < random at every "
          "snapshot of the second half of training; partly if one or two; not reproduced if none")
  hits = int(seed_ok.all() and ok.any()) + int(pooled_ok) + int(bool(late) and stays == len(late))
  return row("Fig 2", f"misalignment in the data eigenbasis stays far below the random-basis "
             f"misalignment ({panel} labels)", "eigenbasis ≪ random basis over training, real and "
             "random labels (qualitative)", ours, rule, count_verdict(hits, 3, ok.any()), plot)


# ----------------------------------------------------------------------------------------------
# Fig 3: filter-covariance eigenvectors vs patch PCs.


def fig3_row(res: Mapping[str, Any], num_seeds: int | None, plot: str) -> dict[str, Any]:
  """Fig 3 (section 2.2): the top eigenvectors of the first-layer filter covariance (pooled over
  seeds) look like the top PCs of the data's patches.  Tests: (i) the top-k subspace overlap
  (mean cos^2 of the principal angles) exceeds chance (a random k-subspace: mean + Z std over 200
  draws) at every k; (ii) it is >= 0.5 at the largest k (most of that subspace is shared)."""
  if res.get("error"):
    return row("Fig 3", "top filter-covariance eigenvectors ≈ top patch PCs", "", res["error"],
               "", NOT_EVALUABLE, plot)
  _need(res, ("subspace_overlap", "random_baseline"), "results.json")
  ks = sorted(res["subspace_overlap"], key=int)
  ov = {k: float(res["subspace_overlap"][k]) for k in ks}
  ch = {k: [float(v) for v in res["random_baseline"][k]] for k in ks}
  beats = [k for k in ks if ov[k] > ch[k][0] + Z * ch[k][1]]
  big = ov[ks[-1]] >= 0.5
  seeds = f"{num_seeds} seeds, " if num_seeds is not None else ""
  ours = ("; ".join(f"top-{k} {fmt(ov[k])} vs chance {fmt(ch[k][0])} ± {fmt(ch[k][1])}" for k in ks)
          + f" (pooled over {seeds}{res.get('num_filters_pooled', '?')} filters); best |cos| of "
          f"the top filter eigenvectors with a patch PC: "
          f"{', '.join(fmt(c, 2) for c in res.get('best_match_cos', [])[:4])} (chance "
          f"{fmt(res.get('best_match_cos_random'), 2)})")
  rule = (f"reproduced if both: (i) top-k overlap > chance mean + {Z:g} std at every k, (ii) "
          f"top-{ks[-1]} overlap ≥ 0.5; partly if one; not reproduced if none")
  hits = int(len(beats) == len(ks)) + int(big)
  return row("Fig 3", "top eigenvectors of the filter covariance ≈ top patch PCs",
             "top filter eigenvectors look like the top patch PCs (qualitative)", ours, rule,
             count_verdict(hits, 2), plot)


# ----------------------------------------------------------------------------------------------
# Fig 4 centre/right: f over epochs of the CNN's first layer.


def f_epochs(res: Mapping[str, Any]) -> dict[str, Any]:
  """Per snapshot (epoch order): epoch and the finished seeds' f [S, d]; plus lambda (descending
  eigenvalues of the patch covariance; index 0 = the largest, mean brightness)."""
  _need(res, ("eigenvalues", "snapshots"), "results.json")
  snaps = sorted(res["snapshots"], key=lambda s: s["step"])
  fs = []
  for s in snaps:
    f = np.asarray(s["f"], np.float64)
    fs.append(f[_finished(s, len(f))])
  return {"epochs": [float(s["epoch"]) for s in snaps], "f": fs,
          "lam": np.asarray(res["eigenvalues"], np.float64)}


def peak(f: np.ndarray, lam: np.ndarray) -> dict[str, Any]:
  """The seed-mean f's peak over lambda: index, lambda, f there (`mean_se` over seeds)."""
  j = int(np.argmax(f.mean(0)))
  return {"index": j, "lam": float(lam[j]), "f": mean_se(f[:, j])}


def fig4_shape_row(labels: str, res: Mapping[str, Any], plot: str) -> dict[str, Any]:
  """Fig 4 centre/right (section 2.3).  Random labels: f stays flat early (until epoch 10 of 40),
  then peaks at a small lambda and is back near its init level at the largest lambda.  Real labels:
  f grows steadily.  Tests (random): (i) at the snapshot nearest 25% of training, the seed-mean f
  rose by < 25% of its final rise at the peak; (ii) final f at the peak > f at the largest lambda
  by Z paired SE; (iii) f at the largest lambda rose by < 50% of the peak's rise.  Tests (real):
  (i) the seed-mean peak f rises at every snapshot; (ii) final peak > init level by Z SE."""
  ep = f_epochs(res)
  f0, fT, lam = ep["f"][0], ep["f"][-1], ep["lam"]
  if not len(fT) or not len(f0):
    return row("Fig 4", f"{labels} labels: shape of f over epochs", "", "no finished seed",
               "", NOT_EVALUABLE, plot)
  base = float(f0.mean())
  pk = peak(fT, lam)
  rise = pk["f"]["mean"] - base
  top = paired(fT[:, pk["index"]], fT[:, 0])
  if labels == "random":
    q = int(np.argmin(np.abs(np.asarray(ep["epochs"]) - 0.25 * ep["epochs"][-1])))
    early = float((ep["f"][q].mean(0) - base).max())
    back = float(fT[:, 0].mean() - base)
    tests = [early < 0.25 * rise, above(top), back < 0.5 * rise]
    ours = (f"init level {fmt(base)}; epoch {ep['epochs'][q]:g}: max rise {fmt(early)}; epoch "
            f"{ep['epochs'][-1]:g}: peak {pm(pk['f'])} at λ={fmt(pk['lam'])}, at the largest λ="
            f"{fmt(lam[0])}: {fmt(fT[:, 0].mean())} (peak − largest-λ {pm(top)})")
    rule = ("reproduced if all of: (i) rise at ~25% of training < 25% of the final peak's rise, "
            f"(ii) final peak − f(largest λ) > {Z:g} paired SE, (iii) f(largest λ) rise < 50% of "
            "the peak's; partly if one or two; not reproduced if none")
    claim, paper = ("random labels: f flat early, then a peak, back to baseline at the largest λ",
                    "flat until epoch 10; epoch 40 peak ≈0.10 at λ≈0.25; baseline at λ≈20")
  else:
    peaks = [float(f.mean(0).max()) for f in ep["f"]]
    steady = all(b > a for a, b in zip(peaks, peaks[1:]))
    grown = paired(fT[:, pk["index"]], np.full(len(fT), base))
    tests = [steady, above(grown)]
    ours = (f"seed-mean peak f at epochs {', '.join(f'{e:g}' for e in ep['epochs'])}: "
            f"{', '.join(fmt(p) for p in peaks)}; final peak {pm(pk['f'])} at λ={fmt(pk['lam'])}")
    rule = (f"reproduced if both: (i) the seed-mean peak f rises at every snapshot, (ii) final "
            f"peak − init level > {Z:g} SE; partly if one; not reproduced if none")
    claim, paper = ("real labels: f grows steadily over training", "grows steadily; epoch 40 peak "
                    "≈0.024 at λ≈1.1")
  return row("Fig 4", claim, paper, ours, rule, count_verdict(sum(tests), len(tests),
                                                               len(fT) > 0), plot)


def fig4_magnitude_row(labels: str, res: Mapping[str, Any], plot: str) -> dict[str, Any]:
  """Fig 4 centre/right: the final peak of f and its lambda beside the paper's epoch-40 values
  (random 0.10 at lambda 0.25, real 0.024 at 1.1).  Tests: (i) peak f within a factor 2 of the
  paper's; (ii) its lambda within a factor 2 of the paper's."""
  ep = f_epochs(res)
  ref = PAPER_FIG4.get(labels)
  if ref is None:
    return row("Fig 4", f"{labels} labels: magnitude of f", "n/a", f"label kind {labels!r}", "",
               NOT_EVALUABLE, plot)
  if not len(ep["f"][-1]):
    return row("Fig 4", f"{labels} labels: magnitude of f", "", "no finished seed", "",
               NOT_EVALUABLE, plot)
  pk = peak(ep["f"][-1], ep["lam"])
  ratio_f, ratio_l = pk["f"]["mean"] / ref["peak_f"], pk["lam"] / ref["peak_lambda"]
  within = lambda r: 0.5 <= r <= 2.0
  ours = (f"epoch {ep['epochs'][-1]:g}: peak {pm(pk['f'])} at λ={fmt(pk['lam'])} "
          f"(×{fmt(ratio_f, 2)} and ×{fmt(ratio_l, 2)} the paper's)")
  rule = ("reproduced if both: peak f and its λ each within a factor 2 of the paper's; partly if "
          "one; not reproduced if neither")
  return row("Fig 4", f"{labels} labels: magnitude of the epoch-40 peak of f",
             f"peak f ≈{ref['peak_f']:g} at λ≈{ref['peak_lambda']:g} (CIFAR10)", ours, rule,
             count_verdict(int(within(ratio_f)) + int(within(ratio_l)), 2), plot)


# ----------------------------------------------------------------------------------------------
# Fig 20: f on Gaussian data against the paper's curves.


def fig20_row(panel: str, res: Mapping[str, Any], reference, plot: str) -> dict[str, Any]:
  """Fig 20 (appendix; Fig 4 left): f of dense nets on Gaussian data matches the paper's curves.
  The RMSE of the seed-mean f (interpolated at the paper's sigmas) against the paper's values,
  relative to the paper curve's mean level: reproduced if <= 5% (about the precision of reading
  values off the plot), partly if <= 15%, not reproduced otherwise."""
  claim = f"f on Gaussian data matches the paper's curve ({panel} panel)"
  if not reference:
    return row("Fig 20", claim, "n/a", "the panel's config has no paper_reference (the paper's "
               "values exist for the std reading only)", "", NOT_EVALUABLE, plot)
  _need(res, ("sigma", "f"), f"{panel}/results.json")
  sigma = np.asarray(res["sigma"], np.float64)
  f = np.asarray(res["f"], np.float64)
  f = f[_finished(res, len(f))]
  order = np.argsort(sigma)
  rs, rf = np.asarray(reference["sigma"], np.float64), np.asarray(reference["f"], np.float64)
  rmse = lambda g: float(np.sqrt(np.mean((np.interp(rs, sigma[order], g[order]) - rf) ** 2)))
  level = float(rf.mean())
  total = rmse(f.mean(0)) if len(f) else float("nan")
  per_seed = mean_se([rmse(g) for g in f])
  rel = total / level
  ours = (f"RMSE of the seed-mean f {fmt(total)} = {100 * rel:.1f}% of the paper's level "
          f"{fmt(level)}; per-seed RMSE {pm(per_seed)}")
  rule = "reproduced if RMSE ≤ 5% of the paper curve's mean level; partly if ≤ 15%; else not"
  verdict = (NOT_EVALUABLE if not len(f) else REPRODUCED if rel <= 0.05 else
             PARTLY if rel <= 0.15 else NOT_REPRODUCED)
  paper = (f"f({fmt(rs[0], 2)}..{fmt(rs[-1], 2)}) = {', '.join(fmt(v) for v in rf)} "
           "(read off Fig 20)")
  return row("Fig 20", claim, paper, ours, rule, verdict, plot)


# ----------------------------------------------------------------------------------------------
# Fig 5, section 2.5 and Fig 1: downstream training speed of the transfer arms.


def arm_curves(res: Mapping[str, Any], arm: str) -> dict[str, Any]:
  """An arm's iterations [T], per-seed train accuracy [S, T] and finished flags [S]."""
  entry = _need(res.get("arms", {}).get(arm), ("iterations", "train_accuracy"),
                f"results.json arms[{arm!r}]")
  acc = np.asarray(entry["train_accuracy"], np.float64)
  fin = entry.get("finished")
  ok = np.ones(len(acc), bool) if fin is None else np.asarray(fin, bool)
  return {"steps": np.asarray(entry["iterations"], np.float64), "acc": acc, "ok": ok}


def fig5_steps(config: Mapping[str, Any], steps: np.ndarray) -> list[int]:
  """Indices of the logged iterations standing for the paper's 1000 and 2000 (of 4500): the same
  fractions of our downstream run (exactly 1000 / 2000 at the paper's 4500 steps)."""
  total = float((config.get("downstream") or {}).get("num_steps") or steps[-1])
  want = [p * total / PAPER_FIG5["downstream_steps"] for p in PAPER_FIG5["iterations"]]
  return [int(np.argmin(np.abs(steps - w))) for w in want]


def compare_at(res, arm: str, ref: str, idx: Sequence[int]) -> list[dict[str, Any]]:
  """Per index of `idx`: step, both arms' seed mean ± std and the paired difference arm - ref."""
  a, b = arm_curves(res, arm), arm_curves(res, ref)
  out = []
  for j in idx:
    d = paired(a["acc"][:, j], b["acc"][:, j], a["ok"], b["ok"])
    out.append({"step": int(a["steps"][j]), "arm": mean_se(a["acc"][a["ok"], j]),
                "ref": mean_se(b["acc"][b["ok"], j]), "diff": d})
  return out


def _compare_text(cmp: Sequence[Mapping[str, Any]], arm: str, ref: str) -> str:
  return "; ".join(f"it {c['step']}: {fmt(c['arm']['mean'])} ± {fmt(c['arm']['std'])} vs "
                   f"{fmt(c['ref']['mean'])} ± {fmt(c['ref']['std'])} std, paired {arm}−{ref} "
                   f"{pm(c['diff'])}" for c in cmp)


def faster_row(figure: str, res, config, arm: str, ref: str, paper: str) -> dict[str, Any]:
  """Fig 5 (section 2.4) / section 2.5: `arm` trains faster than `ref` (scratch; covariance for
  covariance_L<n>).  Test at each report iteration (`fig5_steps`): the paired difference of
  train accuracy (arm - ref, seed i with seed i) exceeds Z SE.  Reproduced at both, partly at
  one, not reproduced at none."""
  cmp = compare_at(res, arm, ref, fig5_steps(config, arm_curves(res, ref)["steps"]))
  hits = sum(above(c["diff"]) for c in cmp)
  rule = (f"paired {arm}−{ref} > {Z:g} SE at the iterations for the paper's 1000 and 2000 (same "
          "fractions of the run): reproduced at both, partly at one, not reproduced at none")
  evaluable = all(c["diff"]["n"] > 1 for c in cmp)
  return row(figure, f"{arm} trains faster than {ref}", paper, _compare_text(cmp, arm, ref), rule,
             count_verdict(hits, len(cmp), evaluable), res.get("figure"))


def same_speed_row(res, config, arm: str, ref: str, paper: str) -> dict[str, Any]:
  """Fig 5: the covariance-sampled first layer transfers as well as the pretrained one.  At each
  report iteration the paired difference's interval (mean ± Z SE) must lie within ±EQUIV_MARGIN:
  reproduced if it does at both; partly if |mean| <= EQUIV_MARGIN at both but an interval sticks
  out (not resolved by these seeds); not reproduced if |mean| > EQUIV_MARGIN at some."""
  cmp = compare_at(res, arm, ref, fig5_steps(config, arm_curves(res, ref)["steps"]))
  mean = [abs(float(c["diff"]["mean"])) for c in cmp]
  inside = [m + Z * float(c["diff"]["se"]) <= EQUIV_MARGIN for m, c in zip(mean, cmp)]
  close = all(m <= EQUIV_MARGIN for m in mean)
  verdict = REPRODUCED if all(inside) else (PARTLY if close else NOT_REPRODUCED)
  if not all(c["diff"]["n"] > 1 for c in cmp):
    verdict = NOT_EVALUABLE
  rule = (f"|paired {arm}−{ref}| + {Z:g} SE ≤ {EQUIV_MARGIN} at both report iterations: reproduced;"
          f" |mean| ≤ {EQUIV_MARGIN} at both but not resolved: partly; else not reproduced")
  return row("Fig 5", f"{arm} ≈ {ref}", paper, _compare_text(cmp, arm, ref), rule, verdict,
             res.get("figure"))


def _paper_pair(arm: str, ref: str) -> str:
  p = PAPER_FIG5
  return "; ".join(f"it {it}: {p[arm][i]:g} vs {p[ref][i]:g} ({p[arm][i] - p[ref][i]:+.3f})"
                   for i, it in enumerate(p["iterations"]))


def fig5_rows(res: Mapping[str, Any], config: Mapping[str, Any]) -> list[dict[str, Any]]:
  """Fig 5 and section 2.5 rows for the arms the run has: every pretrained / covariance arm faster
  than scratch, covariance ~ pretrained, covariance_L<n> faster than covariance."""
  arms = res.get("arms") or {}
  _need(arms, ("scratch",), "results.json arms")
  note = "" if (config.get("downstream") or {}).get("labels", "real") == "real" else \
      " (paper: real labels downstream; this run: random)"
  rows = [faster_row("Fig 5", res, config, arm, "scratch", _paper_pair(arm, "scratch") + note)
          for arm in ("pretrained_no_rescaling", "pretrained", "covariance") if arm in arms]
  if "covariance" in arms and "pretrained" in arms:
    rows.append(same_speed_row(res, config, "covariance", "pretrained",
                               _paper_pair("covariance", "pretrained") + note))
  for arm in sorted(a for a in arms if a.startswith("covariance_L") and "covariance" in arms):
    rows.append(faster_row("§2.5", res, config, arm, "covariance", "covariance_L2/L3 speed up "
                           "further than covariance (qualitative)"))
  if "pretrained_f_L2" in arms and "pretrained" in arms:
    rows.append(faster_row("§2.5", res, config, "pretrained_f_L2", "pretrained",
                           "sampling layer 2 from f_2 speeds up further (qualitative; this arm "
                           "keeps layer 1 pretrained)"))
  tf = res.get("transfer_functions") or {}
  rows += [f_layer_row(res, layer) for layer in sorted(tf)
           if "@" not in layer and f"{layer}@half1" in tf and f"{layer}@init" in tf]
  return rows


def _on_grid(entry: Mapping[str, Any], grid: np.ndarray) -> np.ndarray:
  lam = np.asarray(entry["lambda"], np.float64)
  f = np.asarray(entry["f"], np.float64)
  ok = (lam > 0) & np.isfinite(f)
  order = np.argsort(lam[ok])
  return np.interp(np.log(grid), np.log(lam[ok][order]), f[ok][order])


def f_layer_row(res: Mapping[str, Any], layer: str) -> dict[str, Any]:
  """Section 2.5 diagnostic: is the pretrained network's f_l (layer l's weights against its own
  input covariance) resolved from its init level?  departure = RMS(f_l - f_l at init) and noise =
  RMS(f_l of one half of the seeds - f_l of the other) / 2 (the split-half standard error of the
  pooled f_l), both relative to the init level, on the pooled f_l's lambda knots.  Resolved if
  departure > Z x noise."""
  tf = res["transfer_functions"]
  grid = np.asarray(tf[layer]["lambda"], np.float64)
  grid = grid[grid > 0]
  f, f0 = _on_grid(tf[layer], grid), _on_grid(tf[f"{layer}@init"], grid)
  h0, h1 = _on_grid(tf[f"{layer}@half0"], grid), _on_grid(tf[f"{layer}@half1"], grid)
  level = float(np.mean(np.abs(f0)))
  dep = float(np.sqrt(np.mean((f - f0) ** 2))) / level
  noise = float(np.sqrt(np.mean((h0 - h1) ** 2))) / 2 / level
  ours = (f"f_{layer} departs from its init level ({fmt(level)}) by {fmt(dep)} (RMS, relative); "
          f"split-half noise {fmt(noise)}; f range {fmt(float(f.min()))}..{fmt(float(f.max()))} "
          f"over {len(grid)} λ knots")
  rule = f"resolved (reproduced) if departure > {Z:g} × split-half noise, else not"
  verdict = REPRODUCED if dep > Z * noise else NOT_REPRODUCED
  return row("§2.5", f"the pretrained network's f_{layer} is resolved from its init level "
             "(what sampling that layer can carry)", "f_l measured on the pretrained network",
             ours, rule, verdict, res.get("figure"))


def fig1_direction(run: Mapping[str, Any]) -> str:
  """'negative' for a Fig 1 negative-transfer run (its config title or --config argument says
  so), else 'positive'."""
  title = str((run.get("config") or {}).get("title", ""))
  argv = " ".join(str(a) for a in (run.get("run") or {}).get("argv", []))
  return "negative" if "negative" in title or "fig1.py:negative" in argv else "positive"


def fig1_row(res: Mapping[str, Any], arm: str, direction: str, labels: str,
             figure: str = "Fig 1") -> dict[str, Any]:
  """Fig 1 (section 2.4, section 3): after random-label pretraining a network trains faster
  (positive transfer) or slower (negative) than from scratch.  Test at every logged iteration
  after 0: the paired difference (arm - scratch) has the claimed sign beyond Z SE.  Reproduced if
  it does at >= half of them ("most of downstream training"), partly at fewer, not at none."""
  a, s = arm_curves(res, arm), arm_curves(res, "scratch")
  d = paired(a["acc"], s["acc"], a["ok"], s["ok"])
  sign = 1.0 if direction == "positive" else -1.0
  later = a["steps"] > 0
  mean, se = np.asarray(d["mean"])[later], np.asarray(d["se"])[later]
  hits = int(np.sum(np.isfinite(se) & (sign * mean > Z * se)))
  total = int(later.sum())
  run_mean = mean_se(d["diffs"][:, later].mean(1)) if d["n"] else mean_se([])
  verdict = (NOT_EVALUABLE if d["n"] < 2 or total == 0 else REPRODUCED if 2 * hits >= total
             else PARTLY if hits else NOT_REPRODUCED)
  word = "faster" if direction == "positive" else "slower"
  ours = (f"{arm}−scratch {'> +' if sign > 0 else '< −'}{Z:g} SE at {hits}/{total} logged "
          f"iterations; mean over the run (paired) {pm(run_mean)}")
  rule = (f"paired {arm}−scratch {'above +' if sign > 0 else 'below −'}{Z:g} SE at ≥ half of the "
          "logged iterations after 0: reproduced; at some: partly; at none: not reproduced")
  return row(figure, f"{direction} transfer: {arm} trains {word} than scratch ({labels} labels "
             "downstream)", f"pretrained {word} than scratch over most of training (qualitative)",
             ours, rule, verdict, res.get("figure"))


def fig1_rows(run: Mapping[str, Any], figure: str = "Fig 1") -> list[dict[str, Any]]:
  """Fig 1 rows (Table 1: ImageNet, positive transfer): the pretrained arms (rescaled and not)
  against scratch."""
  res = run["results"]
  arms = _need(res.get("arms"), ("scratch",), "results.json arms")
  labels = ((run.get("config") or {}).get("downstream") or {}).get("labels", "real")
  direction = fig1_direction(run) if figure == "Fig 1" else "positive"
  return [fig1_row(res, arm, direction, labels, figure)
          for arm in ("pretrained", "pretrained_no_rescaling") if arm in arms]


# ----------------------------------------------------------------------------------------------
# Section 3: specialization, activity drop at the switch, widening.


def _n(point: Mapping[str, Any]) -> int:
  fin = point.get("finished")
  return int(np.sum(np.asarray(fin, bool))) if fin is not None else 0


def negative_points(points: Mapping[str, Mapping[str, Any]]) -> list[str]:
  """Section 3: the sweep points that transfer negatively: the gain's bootstrap 95% bound < 1, or
  the arm behind scratch by > 1 SE at >= half of the logged iterations (`search_row`)."""
  def negative(p):
    hi = (p.get("gain_ci") or [np.nan, np.nan])[1]
    return (np.isfinite(hi) and hi < 1.0) or float(p.get("accuracy_behind_fraction", 0.0)) >= 0.5
  return [pid for pid, p in points.items() if not p.get("error") and negative(p)]


def dropped(point: Mapping[str, Any], layers: Sequence[str]) -> list[bool]:
  """Per later layer: does the active fraction drop at the switch beyond the scratch seeds' drop in
  the same window by Z SE?  With per-seed drops (`drop_seeds`, `scratch_drop_seeds` [S]) the SE is
  the paired one (seed i with scratch seed i); without them SE = drop_std / sqrt(n - 1) (drop_std:
  the arm seeds' population std; the scratch drop taken as exact)."""
  n = _n(point)
  out = []
  for layer in layers:
    d = (point.get("activity_drop") or {}).get(layer)
    if d is None or n < 2:
      out.append(False)
      continue
    if "drop_seeds" in d and "scratch_drop_seeds" in d:   # per-seed drops: paired by seed index
      out.append(above(paired(d["drop_seeds"], d["scratch_drop_seeds"])))
      continue
    se = float(d["drop_std"]) / np.sqrt(n - 1)
    out.append(float(d["drop"]) - float(d["scratch_drop"]) > Z * se)
  return out


def _gain_text(p: Mapping[str, Any]) -> str:
  lo, hi = p.get("gain_ci") or [float("nan")] * 2
  cens = p.get("censored", "none")
  return (f"gain {fmt(p.get('gain_censored'), 2)} [5–95% {fmt(lo, 2)}, {fmt(hi, 2)}] "
          f"(n={_n(p)} seeds{'' if cens == 'none' else ', censored ' + cens})")


def search_row(res: Mapping[str, Any], plot: str | None, direction: str = "negative"
               ) -> dict[str, Any]:
  """Fig 1 (left: positive, right: negative transfer), searched with a section 3 sweep of VGG16
  (lr, K random classes, upstream length L): is there a point where the pretrained arm trains
  slower (negative) / faster (positive) than scratch by more than one standard error (unpaired:
  the sweep's arms have independent seeds) at >= half of the logged downstream iterations ("over
  most of downstream training")?  Reproduced if some point is; partly if some point is at fewer
  iterations (e.g. only at the start); not reproduced if none ever is."""
  key = "accuracy_behind_fraction" if direction == "negative" else "accuracy_ahead_fraction"
  other = "accuracy_ahead_fraction" if direction == "negative" else "accuracy_behind_fraction"
  points = {pid: p for pid, p in res["points"].items() if not p.get("error")}
  missing = [pid for pid, p in points.items() if key not in p]
  if missing:
    raise ReportError(f"points {missing[:2]} have no {key} (written by an older version). Fix: "
                      "delete the cells' points.json and rerun the command (the trained states "
                      "are reloaded, not retrained).")
  frac = {pid: float(p[key]) for pid, p in points.items()}
  most = max(frac, key=frac.get) if frac else None
  hits = sum(f >= 0.5 for f in frac.values())
  verdict = (NOT_EVALUABLE if not frac else REPRODUCED if hits else
             PARTLY if frac[most] > 0 else NOT_REPRODUCED)
  word = "behind" if direction == "negative" else "ahead of"
  ours = f"{hits}/{len(frac)} points (lr, K, L, arm) {word} scratch by > 1 SE at ≥ half the iterations"
  if most is not None:
    p = points[most]
    two = float(p.get(key.replace("fraction", "fraction_2se"), float("nan")))
    ours += (f"; most: {most}: at {frac[most]:.0%} of the logged iterations"
             + (f" (> 2 SE: {two:.0%})" if np.isfinite(two) else "")
             + f", the other way at {float(p.get(other, float('nan'))):.0%}; {_gain_text(p)}; "
             f"mean accuracy − scratch over the run {fmt(p.get('auc_difference'))}")
  rule = (f"some point {word} scratch by > 1 SE (unpaired) at ≥ half of the logged iterations "
          "after 0: reproduced; at fewer: partly; never: not reproduced")
  claim = ("slower than scratch over most of downstream training" if direction == "negative"
           else "faster than scratch over most of downstream training")
  return row(TITLES["fig1_search"], f"{direction} transfer: pretrained (rescaled) trains {claim},"
             " at some lr / K / upstream length", f"{claim.split(' over')[0]} over most of "
             f"training (Fig 1 {'right' if direction == 'negative' else 'left'}, qualitative)",
             ours, rule, verdict, plot)


def drop_row(res: Mapping[str, Any], plot: str | None, figure: str = "§3") -> dict[str, Any]:
  """Section 3: in negative-transfer settings the later layers' ReLU activity drops at the
  upstream -> downstream switch.  Over the points that transfer negatively (`negative_points`):
  reproduced if at every one each later layer drops beyond scratch by Z SE (`dropped`); partly if
  at some; not reproduced if at none; not evaluable without a negative point."""
  points, layers = res["points"], res.get("later_layers") or res.get("layers") or []
  neg = negative_points(points)
  hits = sum(all(dropped(points[p], layers)) for p in neg)
  show = (res.get("highlight") or {}).get("negative")
  show = show if show in neg else (neg[0] if neg else show)
  detail = ""
  if show in points and points[show].get("activity_drop"):
    p = points[show]
    ad = p["activity_drop"]
    detail = f"; {show}: {_gain_text(p)}; " + ", ".join(
        f"{l} {fmt(ad[l]['before'], 2)}→{fmt(ad[l]['after'], 2)} (drop {fmt(ad[l]['drop'], 2)} ± "
        f"{fmt(ad[l]['drop_std'], 2)} std, scratch {fmt(ad[l]['scratch_drop'], 2)})"
        for l in layers if l in ad)
  ours = f"{hits}/{len(neg)} negative-transfer points drop in every later layer {layers}" + detail
  rule = (f"over negative points (gain 95% bound < 1, or behind scratch by > 1 SE at ≥ half the "
          f"iterations): every later layer's drop − scratch drop > {Z:g} SE"
          " at all: reproduced; at some: partly; at none: not reproduced")
  return row(figure, "later-layer ReLU activity drops at the switch in negative-transfer settings",
             "sharp drop of later-layer activity at the switch (qualitative)", ours, rule,
             count_verdict(hits, len(neg)), plot)


def widening_row(res: Mapping[str, Any], plot: str | None) -> dict[str, Any]:
  """Section 3: widening the later layers restores positive transfer.  For every negative point
  (`negative_points`) the point with the same lr, K, upstream length and arm at the sweep's
  largest width: reproduced if its gain's 5% bound > 1 at every one; partly at some (or gain > 1
  without the bound); not reproduced at none; not evaluable without a negative point."""
  points = res["points"]
  neg = negative_points(points)
  widest = max(p["width"] for p in points.values())
  key = lambda p: (p["learning_rate"], p["num_random_classes"], p["upstream_steps"], p["arm"])
  wide = {key(p): (pid, p) for pid, p in points.items() if p["width"] == widest}
  strict, loose, shown = 0, 0, []
  for pid in neg:
    w = wide.get(key(points[pid]))
    if w is None or w[1].get("error"):
      continue
    lo = (w[1].get("gain_ci") or [float("nan")])[0]
    strict += int(np.isfinite(lo) and lo > 1.0)
    loose += int((w[1].get("gain_censored") or 0.0) > 1.0)
    shown.append(f"{w[0]}: {_gain_text(w[1])}")
  hw = (res.get("highlight") or {}).get("wide")
  if hw in points:
    shown = [f"{hw}: {_gain_text(points[hw])}"]
  verdict = (NOT_EVALUABLE if not neg else REPRODUCED if strict == len(neg) else
             PARTLY if strict or loose else NOT_REPRODUCED)
  ours = (f"{strict}/{len(neg)} negative points turn positive (5% bound > 1) at width {widest}"
          + (f"; {shown[0]}" if shown else ""))
  rule = ("for each negative point, its widest variant's gain 5% bound > 1 at all: reproduced; at "
          "some (or gain > 1 without the bound): partly; at none: not reproduced")
  return row("§3", "widening the later layers restores positive transfer",
             "wider later layers: positive transfer again (qualitative)", ours, rule, verdict, plot)


# ----------------------------------------------------------------------------------------------
# A run's rows, its provenance line, the markdown.


def _panels(run: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
  """The eigenvalue-map panels {name: {"results", "config"}} the summary results.json lists."""
  res = run.get("results") or {}
  names = [k for k, v in res.items() if isinstance(v, dict) and "checks" in v]
  panels = run.get("panels") or {}
  missing = [n for n in names if (panels.get(n) or {}).get("results") is None]
  if missing or not names:
    raise ReportError(f"{run.get('name')}: panel results {missing or '(none listed)'} are missing "
                      "(WORKDIR/<panel>/results.json). Fix: rerun the binary on that workdir "
                      "(it resumes) so every panel finishes.")
  return {n: panels[n] for n in names}


def _eigenmap_rows(fig: str, run: Mapping[str, Any]) -> list[dict[str, Any]]:
  cfg = run.get("config") or {}
  out = []
  for name, p in _panels(run).items():
    pres, pcfg = p["results"], p.get("config") or {}
    if fig == "fig2":
      out.append(fig2_row(name, pres, cfg.get("figure_name", "fig2_misalignment.png")))
    elif fig == "fig4":
      labels = pcfg.get("labels", name)
      plot = cfg.get("figure_name", "fig4_cnn.png")
      out += [fig4_shape_row(labels, pres, plot), fig4_magnitude_row(labels, pres, plot)]
    else:
      out.append(fig20_row(name, pres, pcfg.get("paper_reference"), cfg.get("figure_name",
                                                                          "fig20.png")))
  return out


def claims(run: Mapping[str, Any]) -> list[dict[str, Any]]:
  """Every claims-table row of one run (its figure from `figure_of`)."""
  fig = figure_of(run)
  res, cfg = run.get("results") or {}, run.get("config") or {}
  if fig in ("fig2", "fig4", "fig20"):
    return _eigenmap_rows(fig, run)
  if fig == "fig3":
    seeds = (cfg.get("train") or {}).get("num_seeds")
    seeds = None if seeds is None else int(seeds) - int(res.get("num_diverged", 0))
    return [fig3_row(res, seeds, "fig3_eigenvectors.png")]
  if fig == "fig5":
    return fig5_rows(res, cfg)
  if fig in ("fig1", "table1"):
    return fig1_rows(run, TITLES[fig])
  _need(res, ("points",), "results.json")
  figs = [str(f).rsplit("/", 1)[-1] for f in res.get("figures") or []]
  act = next((f for f in figs if "activity" in f), None)
  gain = next((f for f in figs if "gain" in f), None)
  if fig == "fig1_search":
    rows = [search_row(res, gain, "positive"), search_row(res, gain, "negative"),
            drop_row(res, act, TITLES[fig])]
    widths = {p["width"] for p in res["points"].values()}
    return rows + ([widening_row(res, gain)] if len(widths) > 1 else [])
  return [drop_row(res, act), widening_row(res, gain)]


def command(argv: Sequence[str]) -> str:
  """run.json's argv as a command to paste: `python -m experiments.X ...` for a binary's path."""
  if not argv:
    return "n/a"
  head = str(argv[0])
  parts = head.replace("\\", "/").rsplit("/", 2)
  if head.endswith(".py") and len(parts) >= 2 and parts[-2] == "experiments":
    head = f"python -m experiments.{parts[-1][:-3]}"
  else:
    head = shlex.quote(head)
  return " ".join([head] + [shlex.quote(str(a)) for a in argv[1:]])


def run_line(run: Mapping[str, Any]) -> str:
  """A run's provenance: command (run.json argv), wall time, status and machine."""
  rec = run.get("run")
  if not rec:
    return f"`{run.get('name')}`: no run.json (command, runtime and machine unknown)"
  m = rec.get("machine") or {}
  earlier = [r.get("wall_s") or 0.0 for r in rec.get("earlier_runs") or []]
  wall = rec.get("wall_s")
  time_text = f"{wall:.0f} s" if wall is not None else "n/a (unfinished)"
  if earlier:
    time_text += f" (+ {sum(earlier):.0f} s in {len(earlier)} earlier invocation(s))"
  gf = m.get("fp32_matmul_gflops")
  machine = (f"{m.get('cpu_model', '?')}, {m.get('cores', '?')} cores, {m.get('jax_backend', '?')}"
             f" ({m.get('device_kind', '?')} x{m.get('num_devices', '?')}), fp32 matmul "
             f"{f'{gf:.1f}' if gf is not None else '?'} GFLOP/s")
  try:
    title = f" ({TITLES[figure_of(run)]})"
  except ReportError:
    title = ""
  return (f"`{run.get('name')}`{title}: `{command(rec.get('argv') or [])}`; runtime {time_text}, "
          f"status {rec.get('status', '?')}; machine: {machine}")


def _cell(text: Any) -> str:
  return " ".join(str(text if text is not None else "").split()).replace("|", "\\|")


def render(runs: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> str:
  """report.md: the claims table (rows carry `run`, the run's name, and `plot`, a link target or
  None) and one provenance line per run."""
  lines = ["# Claims of Maennel et al. 2020 tested by these runs", "",
           f"Uncertainties are over seeds: SE = sample std / √n; 'paired' = per-seed differences "
           f"(seed i of one arm with seed i of the other), finished seeds only; Z = {Z:g}.  "
           "Verdicts follow the rule in their row.", "",
           "| Figure | Claim | Paper | Ours | Verdict rule | Verdict | Plot | Run |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    plot = f"[png]({r['plot']})" if r.get("plot") else "—"
    lines.append("| " + " | ".join(_cell(c) for c in (
        r["figure"], r["claim"], r["paper"], r["ours"], r["rule"], f"**{r['verdict']}**", plot,
        r.get("run", ""))) + " |")
  counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
  lines += ["", "Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n), "",
            "## Runs", ""]
  lines += [f"- {run_line(run)}" for run in runs]
  return "\n".join(lines) + "\n"
