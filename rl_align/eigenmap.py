"""The eigenvalue map f and first-layer alignment of trained networks (the paper's Figs 2, 4, 20).

Pure analysis (it never imports a runner); the experiment that trains the seeds is
`rl_align.runners.eigenmap` (`run`, `run_panels`, `run_misalignment`)::

    from rl_align import eigenmap
    summary = eigenmap.summarize(kernels, lam, V, key=0)   # kernels [S, d, h] or [S, k, k, C, F]
    summary["f"]                        # [S, d]: f(sigma_i) = sqrt(v_i^T Sigma_w v_i) per seed
    summary["misalignment_eigenbasis"]  # [S]  vs  summary["misalignment_random_basis"] [S]
    eigenmap.shape_checks(summary, d=30, reference={"sigma": [...], "f": [...]})

Seeds flagged in `diverged` keep their per-seed rows but enter no pooled statistic, seed mean or
check; when every seed diverged the pooled values are nan and `error` / the checks say so.

results.json schema (documented in the README): eigenvalues, sigma, f [S][d], f_pooled [d],
misalignment_eigenbasis [S], misalignment_random_basis [S], misalignment_floor {mean, std},
num_weight_samples, num_seeds, num_diverged, train_accuracy [S], diverged [S], snapshots [{step,
epoch, ...same keys}], early_time [{step, s0_sq, c, r2, max_rel_err}].
"""

from typing import Any, Mapping, Sequence

import numpy as np

from rl_align import alignment
from rl_align import covariance
from rl_align import curves
from rl_align import errors


def _per_seed(fn, items, ok) -> np.ndarray:
  """fn over every seed; a seed that diverged and cannot be analysed (e.g. a singular Sigma_w)
  gets nan instead of stopping the analysis of the others."""
  out = []
  for item, good in zip(items, ok):
    try:
      out.append(fn(item))
    except (errors.RLAlignError, np.linalg.LinAlgError, FloatingPointError):
      if good:
        raise
      out.append(np.nan)
  return np.array(out, dtype=np.float64)


def summarize(
  kernels: np.ndarray,
  lam: np.ndarray,
  V: np.ndarray,
  *,
  key=0,
  centered=False,
  reduce="sum",
  floor_trials=500,
  diverged=None,
) -> dict[str, Any]:
  """f, misalignment (data eigenbasis vs Haar-random basis) per seed and pooled over the seeds
  that finished.

  Args:
    kernels: first-layer kernels with a leading seed axis, [S, d, h] or [S, k, k, C, F].
    lam, V: descending eigenvalues / eigenvector columns of the input covariance.
    diverged: [S] flags of seeds that diverged (None: none did).
  """
  d = V.shape[0]
  ok = curves.finished_seeds(diverged, len(kernels))
  rand = alignment.random_basis(key, d)
  with np.errstate(over="ignore", invalid="ignore"):
    per_seed = [covariance.weight_covariance(k, centered=centered) for k in kernels]
    f = np.stack([alignment.transfer_function_in_basis(c, V) for c in per_seed])
  mis = lambda c, b: alignment.misalignment(c, b, reduce=reduce, ridge=1e-9)
  n_per_seed = covariance.weight_samples(kernels[0]).shape[0]
  out = {
    "eigenvalues": lam,
    "sigma": np.sqrt(np.clip(lam, 0, None)),
    "f": f,
    "misalignment_eigenbasis": _per_seed(lambda c: mis(c, V), per_seed, ok),
    "misalignment_random_basis": _per_seed(lambda c: mis(c, rand), per_seed, ok),
    "num_weight_samples": n_per_seed,
    "num_seeds": len(kernels),
    "diverged": ~ok,
    "num_diverged": int((~ok).sum()),
  }
  if not ok.any():
    nan = {"mean": float("nan"), "std": float("nan")}
    out.update(
      f_pooled=np.full(d, np.nan),
      misalignment_pooled_eigenbasis=float("nan"),
      misalignment_pooled_random_basis=float("nan"),
      misalignment_floor=nan,
      misalignment_pooled_floor=nan,
      error=curves.all_diverged(len(kernels)),
    )
    return out
  pooled = covariance.weight_covariance(kernels[ok], centered=centered)
  first = per_seed[int(np.flatnonzero(ok)[0])]
  floor = alignment.finite_sample_floor(
    V, alignment.variances_in_basis(first, V), n_per_seed, key, trials=floor_trials, reduce=reduce
  )
  pooled_floor = alignment.finite_sample_floor(
    V,
    alignment.variances_in_basis(pooled, V),
    n_per_seed * int(ok.sum()),
    key,
    trials=floor_trials,
    reduce=reduce,
  )
  out.update(
    {
      "f_pooled": alignment.transfer_function_in_basis(pooled, V),
      "misalignment_pooled_eigenbasis": mis(pooled, V),
      "misalignment_pooled_random_basis": mis(pooled, rand),
      "misalignment_floor": {"mean": floor[0], "std": floor[1]},
      "misalignment_pooled_floor": {"mean": pooled_floor[0], "std": pooled_floor[1]},
    }
  )
  return out


def finished(res: Mapping[str, Any]) -> np.ndarray:
  """[S] bool: the seeds of a summary (or results.json) that enter statistics."""
  return curves.finished_seeds(res.get("diverged"), len(res["f"]))


def early_time_fit(f: np.ndarray, lam: np.ndarray) -> dict[str, float]:
  """Fits f^2 = s0^2 + c * lambda, the random-walk reading of the paper's Proposition (section 2):
  early in training Sigma_w(t) ~ s0^2 I + c t Sigma_x.  f: [S, d] (finished seeds) or [d].

  Returns the fit and how well it holds: r2 and the largest relative error of the predicted f.
  """
  f2 = np.mean(np.asarray(f) ** 2, axis=0) if np.ndim(f) == 2 else np.asarray(f) ** 2
  A = np.stack([np.ones_like(lam), lam], axis=1)
  (s0_sq, c), *_ = np.linalg.lstsq(A, f2, rcond=None)
  pred = A @ np.array([s0_sq, c])
  ss_res, ss_tot = np.sum((f2 - pred) ** 2), np.sum((f2 - f2.mean()) ** 2)
  rel = np.abs(np.sqrt(np.clip(pred, 0, None)) - np.sqrt(f2)) / np.sqrt(f2)
  return {
    "s0_sq": float(s0_sq),
    "c": float(c),
    "r2": float(1 - ss_res / max(ss_tot, 1e-30)),
    "max_rel_err": float(rel.max()),
  }


def shape_checks(res: Mapping[str, Any], d: int, reference=None) -> dict[str, Any]:
  """Numbers the README's results table compares with the paper's Fig 20 (seed means of the
  finished seeds); with a reference {"sigma", "f"} also the RMSE of the seed-mean f against the
  paper's values.  {"error": ...} when every seed diverged."""
  sigma = np.asarray(res["sigma"])
  f = np.asarray(res["f"], np.float64)
  ok = finished(res)
  if not ok.any():
    return {"error": curves.all_diverged(len(f))}
  f = f[ok]
  mean = f.mean(0)
  order = np.argsort(sigma)
  smallest, largest = order[0], order[-1]
  peak = int(np.argmax(mean))
  big = sigma >= 2.0
  rmse = float("nan")
  if reference:
    at = np.interp(reference["sigma"], sigma[order], mean[order])
    rmse = float(np.sqrt(np.mean((at - np.asarray(reference["f"])) ** 2)))
  mis = {
    b: np.asarray(res[f"misalignment_{b}"], np.float64) for b in ("eigenbasis", "random_basis")
  }
  if res.get("diverged") is not None:
    mis = {b: m[ok] for b, m in mis.items()}
  return {
    "rmse_vs_paper": rmse,
    "f_at_smallest_sigma": float(mean[smallest]),
    "init_level_1_over_sqrt_d": d**-0.5,
    "f_at_largest_sigma": float(mean[largest]),
    "peak_f": float(mean[peak]),
    "peak_sigma": float(sigma[peak]),
    "plateau_f_sigma_ge_2": float(mean[big].mean()) if big.any() else float("nan"),
    "max_seed_spread": float(f.std(0).max()) if len(f) > 1 else 0.0,
    "misalignment_eigen_over_random": float(
      np.mean(mis["eigenbasis"]) / np.mean(mis["random_basis"])
    ),
  }


def misalignment_over_training(snapshots: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Fig 2's curves from a run's snapshots: per step the seed means (finished seeds) in both
  bases, the per-seed floor, and the pooled values with their floor."""
  out = []
  for s in snapshots:
    ok = finished(s)
    mean = lambda k, ok=ok, s=s: (
      float(np.mean(np.asarray(s[k], np.float64)[ok])) if ok.any() else float("nan")
    )
    out.append(
      {
        "step": s["step"],
        "eigenbasis_mean": mean("misalignment_eigenbasis"),
        "random_basis_mean": mean("misalignment_random_basis"),
        "floor": s["misalignment_floor"]["mean"],
        "pooled_eigenbasis": s["misalignment_pooled_eigenbasis"],
        "pooled_random_basis": s["misalignment_pooled_random_basis"],
        "pooled_floor": s["misalignment_pooled_floor"]["mean"],
      }
    )
  return out
