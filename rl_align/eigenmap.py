"""The eigenvalue map f and first-layer alignment of trained networks (Figs 2, 4, 20).

Pure analysis plus the experiment runner used by ``python -m experiments.eigenvalue_map``::

    from rl_align import eigenmap
    summary = eigenmap.summarize(kernels, lam, V, key=0)   # kernels [S, d, h] or [S, k, k, C, F]
    summary["f"]                        # [S, d]: f(sigma_i) = sqrt(v_i^T Sigma_w v_i) per seed
    summary["misalignment_eigenbasis"]  # [S]  vs  summary["misalignment_random_basis"] [S]

    results = eigenmap.run(config, workdir)   # trains config.train.num_seeds seeds, writes workdir/

results.json schema (documented in the README): eigenvalues, sigma, f [S][d], f_pooled [d],
misalignment_eigenbasis [S], misalignment_random_basis [S], misalignment_floor {mean, std},
num_weight_samples, train_accuracy [S], diverged [S], snapshots [{step, epoch, ...same keys}],
early_time [{step, s0_sq, c, r2, max_rel_err}].
"""
import time
from typing import Any

import jax
import numpy as np

from rl_align import alignment
from rl_align import covariance
from rl_align import data as data_lib
from rl_align import experiment
from rl_align import models
from rl_align import results
from rl_align import train
from rl_align.runners import common


def data_eigenbasis(config, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(lambda desc, V) of the input covariance: of x itself (vectors) or of its k x k patches."""
  if x.ndim == 4:
    k = int(config.analysis.patch_size)
    _, cov = covariance.patch_covariance(x, k)
  elif config.data.name == "gaussian" and config.analysis.get("population_covariance", True):
    kw = common.source_kwargs(config.data)
    cov = data_lib.gaussian_covariance(stds=kw.get("stds"), variances=kw.get("variances"),
                                       rotate=kw.get("rotate", False), seed=kw.get("seed", 0))
  else:
    _, cov = covariance.data_covariance(x)
  return alignment.eigh_desc(cov)


def summarize(kernels: np.ndarray, lam: np.ndarray, V: np.ndarray, *, key=0, centered=False,
              reduce="sum", floor_trials=5) -> dict[str, Any]:
  """f, misalignment (data eigenbasis vs Haar-random basis) per seed and pooled over seeds.

  Args:
    kernels: first-layer kernels with a leading seed axis, [S, d, h] or [S, k, k, C, F].
    lam, V: descending eigenvalues / eigenvector columns of the input covariance.
  """
  d = V.shape[0]
  rand = alignment.random_basis(key, d)
  per_seed = [covariance.weight_covariance(k, centered=centered) for k in kernels]
  f = np.stack([alignment.transfer_function_in_basis(c, V) for c in per_seed])
  mis = lambda c, b: alignment.misalignment(c, b, reduce=reduce, ridge=1e-9)
  pooled = covariance.weight_covariance(kernels, centered=centered)
  n_per_seed = covariance.weight_samples(kernels[0]).shape[0]
  floor = alignment.finite_sample_floor(V, alignment.variances_in_basis(per_seed[0], V), n_per_seed,
                                        key, trials=floor_trials, reduce=reduce)
  pooled_floor = alignment.finite_sample_floor(V, alignment.variances_in_basis(pooled, V),
                                               n_per_seed * len(kernels), key, trials=floor_trials,
                                               reduce=reduce)
  return {
      "eigenvalues": lam, "sigma": np.sqrt(np.clip(lam, 0, None)),
      "f": f, "f_pooled": alignment.transfer_function_in_basis(pooled, V),
      "misalignment_eigenbasis": np.array([mis(c, V) for c in per_seed]),
      "misalignment_random_basis": np.array([mis(c, rand) for c in per_seed]),
      "misalignment_pooled_eigenbasis": mis(pooled, V),
      "misalignment_pooled_random_basis": mis(pooled, rand),
      "misalignment_floor": {"mean": floor[0], "std": floor[1]},
      "misalignment_pooled_floor": {"mean": pooled_floor[0], "std": pooled_floor[1]},
      "num_weight_samples": n_per_seed, "num_seeds": len(kernels),
  }


def early_time_fit(f: np.ndarray, lam: np.ndarray) -> dict[str, float]:
  """Fits f^2 = s0^2 + c * lambda (PAPER.md section 2: Sigma_w(t) ~ s0^2 I + c t Sigma_x).

  Returns the fit and how well it holds: r2 and the largest relative error of the predicted f.
  """
  f2 = np.mean(np.asarray(f) ** 2, axis=0) if np.ndim(f) == 2 else np.asarray(f) ** 2
  A = np.stack([np.ones_like(lam), lam], axis=1)
  (s0_sq, c), *_ = np.linalg.lstsq(A, f2, rcond=None)
  pred = A @ np.array([s0_sq, c])
  ss_res, ss_tot = np.sum((f2 - pred) ** 2), np.sum((f2 - f2.mean()) ** 2)
  rel = np.abs(np.sqrt(np.clip(pred, 0, None)) - np.sqrt(f2)) / np.sqrt(f2)
  return {"s0_sq": float(s0_sq), "c": float(c), "r2": float(1 - ss_res / max(ss_tot, 1e-30)),
          "max_rel_err": float(rel.max())}


def load_data(config):
  """Training inputs (standardized if config.data.standardize) and their labels [S, N] or [N]."""
  ds = common.load_split(config.data, "train")
  x = ds.x
  if config.data.standardize:
    (x,) = common.standardize_like(x)
  return ds, x, common.make_labels(config, ds)


def run(config, workdir: str) -> dict[str, Any]:
  """Trains the seeds, analyses final weights and snapshots, writes results.json/arrays.npz/plots."""
  t0 = time.time()
  ds, x, labels = load_data(config)
  lam, V = data_eigenbasis(config, x)
  model = models.build(config.model)
  res = train.train(model, config.train, x, labels, workdir=workdir, name="train")
  kernels = models.first_layer_kernel(res.params)
  key = int(config.analysis.basis_seed)
  out = summarize(kernels, lam, V, key=key, centered=config.analysis.centered,
                  reduce=config.analysis.reduce)
  out["train_accuracy"] = res.final_metrics.get("train_accuracy")
  out["diverged"] = res.diverged
  out["step"], out["epoch"] = res.final_step, res.final_step / res.steps_per_epoch
  snaps, fits = [], []
  for step, snap in res.snapshots.items():
    s = summarize(snap["first_kernel"], lam, V, key=key, centered=config.analysis.centered,
                  reduce=config.analysis.reduce, floor_trials=2)
    s.update(step=step, epoch=step / res.steps_per_epoch)
    snaps.append({k: v for k, v in s.items() if k not in ("eigenvalues", "sigma")})
    if step > 0:
      fits.append({"step": step, "epoch": step / res.steps_per_epoch, **early_time_fit(s["f"], lam)})
  out["snapshots"] = snaps
  out["early_time"] = fits
  out["num_train_examples"] = len(ds)
  out["runtime_s"] = time.time() - t0
  out["layout"] = res.layout
  results.write_json(workdir, "results.json", out)
  results.write_npz(workdir, "arrays.npz", {
      "eigenvalues": lam, "eigenvectors": V, "f": out["f"], "first_kernel": kernels,
      **{f"snapshot_{s['step']}_f": s["f"] for s in snaps}})
  from rl_align import plotting  # pylint: disable=g-import-not-at-top
  plotting.plot_eigenmap(out, workdir, title=config.get("title", ""),
                         reference=config.get("paper_reference", None))
  return out


def panel_config(config, name: str):
  """The full config of one panel: the shared fields updated with config.panels[name]."""
  import copy  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  base = copy.deepcopy(config.to_dict())
  panels = base.pop("panels", {})

  def merge(dst, src):
    for k, v in src.items():
      if isinstance(v, dict) and isinstance(dst.get(k), dict):
        merge(dst[k], v)
      else:
        dst[k] = v
  merge(base, panels[name])
  return ml_collections.ConfigDict(base)


def shape_checks(res: dict[str, Any], d: int, reference=None) -> dict[str, float]:
  """Numbers the README's results table compares with the paper (PAPER.md targets); with a
  reference {"sigma", "f"} also the RMSE of the seed-mean f against the paper's values."""
  sigma = np.asarray(res["sigma"])
  f = np.asarray(res["f"])
  mean = f.mean(0)
  order = np.argsort(sigma)
  smallest, largest = order[0], order[-1]
  peak = int(np.argmax(mean))
  big = sigma >= 2.0
  rmse = float("nan")
  if reference:
    at = np.interp(reference["sigma"], sigma[order], mean[order])
    rmse = float(np.sqrt(np.mean((at - np.asarray(reference["f"])) ** 2)))
  return {
      "rmse_vs_paper": rmse,
      "f_at_smallest_sigma": float(mean[smallest]), "init_level_1_over_sqrt_d": d ** -0.5,
      "f_at_largest_sigma": float(mean[largest]), "peak_f": float(mean[peak]),
      "peak_sigma": float(sigma[peak]),
      "plateau_f_sigma_ge_2": float(mean[big].mean()) if big.any() else float("nan"),
      "max_seed_spread": float(f.std(0).max()) if len(f) > 1 else 0.0,
      "misalignment_eigen_over_random": float(np.mean(res["misalignment_eigenbasis"]) /
                                              np.mean(res["misalignment_random_basis"])),
  }


def run_panels(config, workdir: str, f_figure: str | None = None) -> dict[str, Any]:
  """Runs every panel of config.panels in workdir/<panel>/ and draws their f curves in one figure
  (workdir/<f_figure or config.figure_name>)."""
  import os  # pylint: disable=g-import-not-at-top
  from rl_align import plotting  # pylint: disable=g-import-not-at-top
  if not config.get("panels"):
    raise experiment.errors.ConfigError(
        "config.panels is empty: nothing to run. Fix: pick a panel, e.g. fig20.py:right or :all.")
  summary, outs, refs = {}, [], []
  for name in config.panels:
    pcfg = panel_config(config, name)
    pdir = os.path.join(workdir, name)
    os.makedirs(pdir, exist_ok=True)
    experiment.check_workdir_config(pcfg, pdir)
    out = run(pcfg, pdir)
    d = len(out["eigenvalues"])
    summary[name] = {"checks": shape_checks(out, d, pcfg.get("paper_reference")),
                     "train_accuracy": out["train_accuracy"],
                     "runtime_s": out["runtime_s"], "workdir": pdir}
    outs.append(out)
    refs.append(pcfg.get("paper_reference"))
  path = os.path.join(workdir, f_figure or config.get("figure_name", "panels.png"))
  if config.get("figure_style") == "epochs":
    fig = plotting.plot_f_over_epochs(outs, list(config.panels), path)
  else:
    fig = plotting.plot_panels(outs, list(config.panels), refs, path)
  summary["figure"] = fig
  results.write_json(workdir, "results.json", summary)
  return summary


def run_misalignment(config, workdir: str) -> dict[str, Any]:
  """Fig 2: run the panels, then draw misalignment over training for all of them in one figure."""
  import os  # pylint: disable=g-import-not-at-top
  from rl_align import plotting  # pylint: disable=g-import-not-at-top
  summary = run_panels(config, workdir, f_figure="f_panels.png")
  runs = {name: results.read_json(os.path.join(workdir, name), "results.json")["snapshots"]
          for name in config.panels}
  summary["misalignment_figure"] = plotting.plot_misalignment(
      runs, os.path.join(workdir, config.get("figure_name", "misalignment.png")))
  for name, snaps in runs.items():
    summary[name]["misalignment_over_training"] = [
        {"step": s["step"], "eigenbasis_mean": float(np.mean(s["misalignment_eigenbasis"])),
         "random_basis_mean": float(np.mean(s["misalignment_random_basis"])),
         "floor": s["misalignment_floor"]["mean"],
         "pooled_eigenbasis": s["misalignment_pooled_eigenbasis"],
         "pooled_random_basis": s["misalignment_pooled_random_basis"],
         "pooled_floor": s["misalignment_pooled_floor"]["mean"]} for s in snaps]
  results.write_json(workdir, "results.json", summary)
  return summary


def run_sweep(config, workdir: str, field: str, values) -> dict[str, Any]:
  """Runs `run_panels` once per value of a dotted config field (e.g. "train.learning_rate") in
  workdir/<field>=<value>/ and tabulates each panel's shape checks (rmse_vs_paper first)."""
  import os  # pylint: disable=g-import-not-at-top
  table = {}
  for value in values:
    cfg = config.copy_and_resolve_references()
    node, *path = field.split(".")
    target = cfg
    for p in [node] + path[:-1]:
      if p not in target:
        raise experiment.errors.ConfigError(f"sweep field {field!r}: config has no {p!r}.")
      target = target[p]
    leaf = path[-1] if path else node
    if leaf not in target:
      raise experiment.errors.ConfigError(f"sweep field {field!r}: config has no {leaf!r}.")
    target[leaf] = value
    point = os.path.join(workdir, f"{field}={value}")
    os.makedirs(point, exist_ok=True)
    experiment.check_workdir_config(cfg, point)
    summary = run_panels(cfg, point)
    table[str(value)] = {name: summary[name]["checks"] for name in cfg.panels}
  results.write_json(workdir, "sweep.json", {"field": field, "points": table})
  return table
