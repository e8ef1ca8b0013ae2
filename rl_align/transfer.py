"""Transfer after random-label pretraining, and covariance-aligned initialization (Figs 1 and 5, 2.5).

Protocol (PAPER.md "Protocol details"): one seeded permutation cuts a source split into disjoint
`upstream` and `downstream` sets (plus `test` when the source has no test split); inputs are
standardized per channel with the upstream statistics.  Upstream: num_seeds seeds trained on K random
labels (one draw per seed).  Downstream: every arm starts num_seeds seeds from its own init and
trains on the downstream set with the real labels (or fresh random labels), all with the same data
order per seed; train accuracy is logged on a fixed subset of the downstream set every
`downstream.eval_every_steps`, test accuracy at the end.

Arms (`ARMS`; `transfer_layers` = how many bottom layers are carried over, 0 = all but the head):

- scratch: the model's own init.
- pretrained: the weight-scaling control: each carried tensor rescaled to its L2 norm at (upstream)
  init; every other layer, the head included, fresh.
- pretrained_no_rescaling: the carried layers as trained; the rest fresh.
- covariance: the first layer re-drawn i.i.d. from N(0, Sigma_w), Sigma_w = E[w w^T] of the pretrained
  first-layer filters (as trained) pooled over all upstream seeds; the rest fresh.
- covariance_L<n>: as covariance, then layers 2..n re-drawn one by one (paper section 2.5) from
  V diag(f_l(lambda))^2 V^T, (lambda, V) of layer l's input covariance in the NEW network on the
  downstream data, f_l measured on the pretrained seeds against their own layer-l inputs (upstream
  data), pooled over seeds (`init.measure_layer_transfer`).
- pca_whitening (peer, airbench's whitening conv): the first layer's first 2 * min(F/2, d) filters are
  +-v_i / sqrt(lambda_i + eps) of the downstream data's patch covariance (top eigenpairs first), the
  remaining filters keep the fresh init; the layer is trained like the others (airbench freezes it).
  No upstream information is used.
- f_only (peer): the first layer drawn from V diag(f(lambda))^2 V^T with (lambda, V) of the DOWNSTREAM
  data's patch covariance and f measured on another dataset: `f_only.source` = "upstream" (f of the
  pretrained first layers against the upstream split) or a data config (a separate upstream run, e.g.
  photos at another resolution, or digits); f is applied as a function of lambda alone.

`rescale_sampled` (default True): every layer drawn by covariance, covariance_L<n> and f_only is
scaled, per seed, to the L2 norm of its fresh init -- the weight-scaling control the pretrained arm
gets, so that these arms are compared with `pretrained` on structure alone (trained first-layer
filters are ~1.6x their init norm locally).  False keeps the trained scale (compare them with
pretrained_no_rescaling then).

Usage::

    from rl_align import transfer
    out = transfer.run(config, workdir)              # experiments/configs/fig5.py
    out["arms"]["covariance"]["train_accuracy"]      # [S][T] at out["arms"][...]["iterations"]
    out["speedup"]["covariance"]["0.6"]              # scratch iterations / arm iterations

results.json (README "Transfer"): arms {arm: {iterations [T], train_accuracy [S][T], test_accuracy
[S], train_accuracy_mean/std [T], diverged [S]}}, upstream {train_accuracy [S], ok, min_train_accuracy,
num_steps}, speedup {arm: {threshold: ratio}}, iterations_to_reach {arm: {threshold: mean}},
table {arm: {step: [mean, std]}}, checks (Fig 5 targets), transfer_functions {layer: {lambda, f}},
data {sizes}, runtime_s, figure.  Each phase has its own engine `name` (upstream, f_source,
downstream_<arm>) and its own summary file under workdir/phases/, so rerunning resumes and a finished
run is only re-summarized.
"""
import copy
import os
import re
import time
from typing import Any, Mapping

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rl_align import covariance
from rl_align import curves
from rl_align import data as data_lib
from rl_align import errors
from rl_align import experiment
from rl_align import init as init_lib
from rl_align import models
from rl_align import results
from rl_align import train
from rl_align.runners import common

ARMS = ("scratch", "pretrained", "pretrained_no_rescaling", "covariance", "covariance_L2",
        "covariance_L3", "pca_whitening", "f_only")
_ARM_RE = re.compile(r"^(scratch|pretrained|pretrained_no_rescaling|covariance|covariance_L(\d+)|"
                     r"pca_whitening|f_only)$")
# fold_in tags of the downstream seeds' extra streams.
_FRESH, _SAMPLE = 21, 22
_PHASES = "phases"


# ----------------------------------------------------------------------------------------------
# Small helpers.


def flatten(params) -> dict[str, np.ndarray]:
  """Nested params -> {"layer/kernel": array} (npz friendly)."""
  return {"/".join(k): np.asarray(v)
          for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(params)).items()}


def unflatten(flat: Mapping[str, Any]):
  return flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def seed_slice(stacked, i: int):
  return jax.tree.map(lambda a: np.asarray(a[i]), stacked)


def stack(trees):
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def check_arms(arms) -> list[str]:
  """The arm names, validated; scratch first (every speed-up is relative to it)."""
  bad = [a for a in arms if not _ARM_RE.match(str(a))]
  if bad:
    raise errors.ConfigError(f"config.arms has unknown arms {bad}. Fix: use names from {ARMS} "
                             "(covariance_L<n> for any n >= 1).")
  arms = list(dict.fromkeys(str(a) for a in arms))
  return ["scratch"] + [a for a in arms if a != "scratch"]


def depth_of(arm: str) -> int:
  """Layers sampled by a covariance arm: covariance -> 1, covariance_L3 -> 3, others 0."""
  if arm == "covariance":
    return 1
  m = _ARM_RE.match(arm)
  return int(m.group(2)) if m and m.group(2) else 0


def _phase_path(workdir: str) -> str:
  return os.path.join(workdir, _PHASES)


def load_phase(workdir: str, name: str):
  return results.read_json(_phase_path(workdir), f"{name}.json")


def save_phase(workdir: str, name: str, obj) -> None:
  results.write_json(_phase_path(workdir), f"{name}.json", obj)


def accuracy(model, stacked_params, x, y, batch_size: int = 1024) -> np.ndarray:
  """[S] accuracy of each seed's params on (x, y) ([M] or [S, M] labels)."""
  apply = jax.jit(lambda p, xb: jnp.argmax(model.apply({"params": p}, xb), -1))
  s = jax.tree.leaves(stacked_params)[0].shape[0]
  y = np.broadcast_to(np.asarray(y), (s, len(x)))
  out = np.zeros(s)
  for i in range(s):
    p = seed_slice(stacked_params, i)
    hits = 0
    for b in range(0, len(x), batch_size):
      hits += int(np.sum(np.asarray(apply(p, x[b:b + batch_size])) == y[i, b:b + batch_size]))
    out[i] = hits / max(len(x), 1)
  return out


def _curve(metrics, key: str, ids, phase: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps [T], values [S, T]) of one logged metric of one engine phase."""
  rows = [r for r in metrics if r.get("phase") == phase and key in r]
  steps = sorted({r["step"] for r in rows})
  pos = {s: j for j, s in enumerate(steps)}
  out = np.full((len(ids), len(steps)), np.nan)
  col = {i: k for k, i in enumerate(ids)}
  for r in rows:
    if r["seed"] in col:
      out[col[r["seed"]], pos[r["step"]]] = r[key]
  return np.asarray(steps), out


def engine_config(config, phase: Mapping[str, Any], seed: int) -> ml_collections.ConfigDict:
  """config.train updated with a phase's engine fields (num_steps, eval_every_steps, ...)."""
  cfg = ml_collections.ConfigDict(copy.deepcopy(config.train.to_dict()))
  for k in ("num_steps", "num_epochs", "learning_rate", "batch_size", "eval_every_steps",
            "log_every_steps", "train_eval_examples", "num_seeds"):
    if k in phase and phase[k] is not None:
      cfg[k] = phase[k]
  cfg.seed = int(seed)
  cfg.snapshot_steps, cfg.snapshot_epochs = (), ()
  return cfg


# ----------------------------------------------------------------------------------------------
# Data.


def load_data(config) -> dict[str, Any]:
  """Disjoint upstream / downstream (/ test) splits of config.data, standardized with upstream stats.

  config.split: {upstream, downstream, test, seed}; test > 0 cuts the test set from the same
  permutation, test == 0 loads the source's config.data.test_split (capped at test_examples).
  """
  sp = config.split
  ds = common.load_split(config.data, "train")
  sizes = {"upstream": int(sp.upstream), "downstream": int(sp.downstream)}
  if int(sp.get("test", 0)) > 0:
    sizes["test"] = int(sp.test)
  idx = data_lib.split_indices(len(ds), sizes, seed=int(sp.seed))
  up, down = ds.subset(idx["upstream"]), ds.subset(idx["downstream"])
  if "test" in idx:
    test = ds.subset(idx["test"])
  else:
    test = common.load_split(config.data, config.data.get("test_split", "test"))
    cap = int(config.data.get("test_examples", 0) or 0)
    if cap:
      test = test.subset(slice(0, cap))
  x_up, x_down, x_test = up.x, down.x, test.x
  if config.data.get("standardize", True):
    x_up, x_down, x_test = common.standardize_like(x_up, x_down, x_test)
  return {"x_up": x_up, "x_down": x_down, "y_down": down.y, "x_test": x_test, "y_test": test.y,
          "num_classes": ds.num_classes, "indices": idx,
          "sizes": {k: len(v) for k, v in idx.items()} | {"test": len(x_test)}}


# ----------------------------------------------------------------------------------------------
# Upstream.


def _model(config, num_classes: int):
  mcfg = ml_collections.ConfigDict(copy.deepcopy(config.model.to_dict()))
  mcfg.num_classes = int(num_classes)
  return models.build(mcfg)


def run_upstream(config, workdir: str, x_up, name: str = "upstream") -> dict[str, Any]:
  """Trains the upstream seeds on K random labels; returns {init, params (flat, [S, ...]),
  train_accuracy [S], steps, curve [S, T]}; a finished phase is read back from workdir."""
  done = load_phase(workdir, name)
  path = _phase_path(workdir)
  if done is not None and os.path.exists(os.path.join(path, f"{name}.npz")):
    arrays = results.read_npz(path, f"{name}.npz")
    done["init"] = {k[5:]: v for k, v in arrays.items() if k.startswith("init/")}
    done["params"] = {k[6:]: v for k, v in arrays.items() if k.startswith("final/")}
    return done
  t0 = time.time()
  uc = config.upstream
  k = int(uc.num_classes)
  model = _model(config, k)
  cfg = engine_config(config, uc, int(uc.seed))
  cfg.snapshot_steps = (0,)
  ids = train.seed_ids(cfg)
  labels = train.random_labels(int(uc.label_seed), ids, len(x_up), k)
  res = train.train(model, cfg, x_up, labels, workdir=workdir, snapshot_fn=flatten, name=name)
  steps, acc = _curve(res.metrics, "train_accuracy", ids, name)
  final = np.asarray(res.final_metrics.get("train_accuracy", acc[:, -1] if acc.size else np.nan))
  out = {"train_accuracy": final, "steps": steps, "curve": acc, "num_steps": res.final_step,
         "num_classes": k, "diverged": res.diverged, "runtime_s": time.time() - t0,
         "min_train_accuracy": float(uc.min_train_accuracy),
         "ok": bool(np.mean(final) >= float(uc.min_train_accuracy))}
  if not out["ok"]:
    logging.warning(
        "%s: mean random-label train accuracy %.3f < upstream.min_train_accuracy=%.2f: the network "
        "has barely fitted its random labels, so little transfer is expected (PAPER.md known "
        "traps). Fix: train longer (upstream.num_steps), use fewer upstream examples or a wider "
        "model.", name, float(np.mean(final)), float(uc.min_train_accuracy))
  results.write_npz(path, f"{name}.npz",
                    {**{f"init/{k}": v for k, v in res.snapshots[0].items()},
                     **{f"final/{k}": v for k, v in flatten(res.params).items()}})
  save_phase(workdir, name, out)
  out = results.read_json(path, f"{name}.json")
  out["init"], out["params"] = res.snapshots[0], flatten(res.params)
  return out


def f_source(config, workdir: str, model_up, up: Mapping[str, Any], x_up) -> init_lib.TransferFunction:
  """f of the f_only arm: from the main upstream run, or from a separate upstream run on
  config.f_only.data (trained with the upstream settings, config.f_only overriding them)."""
  fo = config.f_only
  if fo.source == "upstream":
    params, x = [seed_slice(unflatten(up["params"]), i)
                 for i in range(len(up["train_accuracy"]))], x_up
  elif fo.source == "data":
    src = ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))
    src.data = fo.data
    src.split = fo.split
    src.upstream.update({k: v for k, v in fo.get("upstream", {}).items()})
    x = load_data(src)["x_up"]
    other = run_upstream(src, workdir, x, name="f_source")
    params = [seed_slice(unflatten(other["params"]), i)
              for i in range(len(other["train_accuracy"]))]
    model_up = _model(src, int(src.upstream.num_classes))
  else:
    raise errors.ConfigError(f"config.f_only.source={fo.source!r} is unknown. Fix: 'upstream' or "
                             "'data' (with config.f_only.data).")
  layer = models.layer_names(params[0])[0]
  n = int(config.layerwise.num_examples)
  return init_lib.measure_layer_transfer(model_up, params, x[:n], layer, num_bins=None)


# ----------------------------------------------------------------------------------------------
# Downstream inits.


class ArmBuilder:
  """Builds each arm's stacked downstream init params [S, ...] (cached across arms)."""

  def __init__(self, config, model_down, model_up, up, data, workdir: str):
    self.config, self.model, self.model_up, self.up, self.data = config, model_down, model_up, up, data
    self.workdir = workdir
    dc = config.downstream
    self.ids = list(range(int(config.train.seed_offset),
                          int(config.train.seed_offset) + int(config.train.num_seeds)))
    root = int(dc.seed)
    x1 = data["x_down"][:1]
    self.fresh = [model_down.init(jax.random.fold_in(train.seed_key(root, i, _FRESH), 0), x1)["params"]
                  for i in self.ids]
    self.sample_keys = [train.seed_key(root, i, _SAMPLE) for i in self.ids]
    self.layers = models.layer_names(self.fresh[0])
    self.head = self.layers[-1]
    self.pre = unflatten(up["params"])
    self.pre_init = unflatten(up["init"])
    n_t = int(config.transfer_layers)
    self.carried = self.layers[:-1] if n_t <= 0 else self.layers[:min(n_t, len(self.layers) - 1)]
    self.n_ex = int(config.layerwise.num_examples)
    self._cache: dict[str, list] = {}
    self.transfer_functions: dict[str, init_lib.TransferFunction] = {}
    self._sigma_w = None

  def _carry(self, src_list):
    """Fresh params with the carried layers taken from src_list[i] (one tree per seed)."""
    out = []
    for fresh, src in zip(self.fresh, src_list):
      p = dict(fresh)
      for layer in self.carried:
        p = init_lib.replace_layer(p, src, layer)
      out.append(p)
    return out

  def sigma_w(self) -> np.ndarray:
    """E[w w^T] of the pretrained first-layer filters (as trained) pooled over all upstream seeds."""
    if self._sigma_w is None:
      self._sigma_w = covariance.weight_covariance(np.asarray(self.pre[self.layers[0]]["kernel"]))
    return self._sigma_w

  def _rescaled_layer(self, params_list, layer: str):
    """With config.rescale_sampled: each seed's `layer` scaled to the L2 norm of its fresh init."""
    if not self.config.get("rescale_sampled", True):
      return params_list
    return [init_lib.replace_layer(p, {layer: init_lib.rescale_to_init(p[layer], fr[layer])}, layer)
            for p, fr in zip(params_list, self.fresh)]

  def _with_first(self, kernels):
    out = []
    for fresh, k in zip(self.fresh, kernels):
      p = flax.core.unfreeze(fresh)
      p[self.layers[0]] = dict(p[self.layers[0]], kernel=np.asarray(k))
      out.append(p)
    return out

  def _patch_cov(self, x):
    kernel = np.asarray(self.fresh[0][self.layers[0]]["kernel"])
    samples = init_lib.input_samples(x, kernel.shape)
    return covariance.data_covariance(samples)[1]

  def f_layer(self, layer: str) -> init_lib.TransferFunction:
    if layer not in self.transfer_functions:
      s = len(self.up["train_accuracy"])
      per_seed = [seed_slice(self.pre, i) for i in range(s)]
      self.transfer_functions[layer] = init_lib.measure_layer_transfer(
          self.model_up, per_seed, self.data["x_up"][:self.n_ex], layer,
          num_bins=int(self.config.layerwise.num_bins) or None)
    return self.transfer_functions[layer]

  def build(self, arm: str) -> list:
    if arm in self._cache:
      return self._cache[arm]
    s = len(self.fresh)
    pre = [seed_slice(self.pre, i) for i in range(s)]
    if arm == "scratch":
      out = list(self.fresh)
    elif arm == "pretrained_no_rescaling":
      out = self._carry(pre)
    elif arm == "pretrained":
      pre0 = [seed_slice(self.pre_init, i) for i in range(s)]
      out = self._carry([init_lib.rescale_to_init(p, p0) for p, p0 in zip(pre, pre0)])
    elif arm == "covariance":
      shape = np.asarray(self.fresh[0][self.layers[0]]["kernel"]).shape
      kinit = init_lib.covariance_init(self.sigma_w())
      out = self._with_first([kinit(jax.random.fold_in(k, 0), shape) for k in self.sample_keys])
      out = self._rescaled_layer(out, self.layers[0])
    elif depth_of(arm) > 1:
      n = depth_of(arm)
      if n > len(self.layers):
        raise errors.ConfigError(f"arm {arm} samples {n} layers but the model has only "
                                 f"{len(self.layers)} ({self.layers}). Fix: use L <= "
                                 f"{len(self.layers)}.")
      below = self.build("covariance" if n == 2 else f"covariance_L{n - 1}")
      layer = self.layers[n - 1]
      f = self.f_layer(layer)
      x = self.data["x_down"][:self.n_ex]
      out = [init_lib.sample_layer(self.model, p, x, layer, f, jax.random.fold_in(k, n - 1))[0]
             for p, k in zip(below, self.sample_keys)]
      out = self._rescaled_layer(out, layer)
    elif arm == "pca_whitening":
      first = np.asarray(self.fresh[0][self.layers[0]]["kernel"])
      w = init_lib.whitening_filters(self._patch_cov(self.data["x_down"][:self.n_ex]),
                                     first.shape[-1], float(self.config.pca_whitening.eps))
      used = np.any(w != 0, axis=0)
      kernels = []
      for fresh in self.fresh:
        k = np.asarray(fresh[self.layers[0]]["kernel"]).reshape(-1, first.shape[-1]).copy()
        k[:, used] = w[:, used]
        kernels.append(k.reshape(first.shape).astype(np.float32))
      out = self._with_first(kernels)
    elif arm == "f_only":
      f = f_source(self.config, self.workdir, self.model_up, self.up, self.data["x_up"])
      self.transfer_functions["f_only"] = f
      cov = self._patch_cov(self.data["x_down"][:self.n_ex])
      shape = np.asarray(self.fresh[0][self.layers[0]]["kernel"]).shape
      kinit = init_lib.transfer_init(cov, f)
      out = self._with_first([kinit(jax.random.fold_in(k, 0), shape) for k in self.sample_keys])
      out = self._rescaled_layer(out, self.layers[0])
    else:
      raise errors.ConfigError(f"unknown arm {arm!r}. Fix: use one of {ARMS}.")
    self._cache[arm] = out
    return out


# ----------------------------------------------------------------------------------------------
# Downstream.


def downstream_labels(config, n: int, y_real, ids) -> np.ndarray:
  if config.downstream.labels == "real":
    return np.asarray(y_real, np.int32)
  if config.downstream.labels == "random":
    return train.random_labels(int(config.downstream.label_seed), ids, n,
                               int(config.downstream.num_random_classes))
  raise errors.ConfigError(f"config.downstream.labels={config.downstream.labels!r} is unknown. "
                           "Fix: 'real' or 'random'.")


def run_arm(config, workdir: str, arm: str, builder: ArmBuilder, data) -> dict[str, Any]:
  """One downstream arm: num_seeds seeds through the engine; returns its results entry."""
  name = f"downstream_{arm}"
  done = load_phase(workdir, name)
  if done is not None:
    return done
  t0 = time.time()
  dc = config.downstream
  cfg = engine_config(config, dc, int(dc.seed))
  ids = train.seed_ids(cfg)
  x, y = data["x_down"], downstream_labels(config, len(data["x_down"]), data["y_down"], ids)
  init = stack(builder.build(arm))
  m = min(len(x), int(cfg.train_eval_examples))
  acc0 = accuracy(builder.model, init, x[:m], np.broadcast_to(y, (len(ids), len(x)))[:, :m])
  res = train.train(builder.model, cfg, x, y, workdir=workdir, init_params=init, name=name)
  steps, acc = _curve(res.metrics, "train_accuracy", ids, name)
  steps = np.concatenate([[0], steps])
  acc = np.concatenate([acc0[:, None], acc], axis=1)
  y_test = data["y_test"]
  test = accuracy(builder.model, res.params, data["x_test"], y_test)
  out = {"iterations": steps, "train_accuracy": acc, "test_accuracy": test,
         "train_accuracy_mean": acc.mean(0), "train_accuracy_std": acc.std(0),
         "test_accuracy_mean": float(test.mean()), "test_accuracy_std": float(test.std()),
         "diverged": res.diverged, "runtime_s": time.time() - t0}
  save_phase(workdir, name, out)
  return load_phase(workdir, name)


# ----------------------------------------------------------------------------------------------
# Summaries.


def summarize(arms: Mapping[str, Mapping[str, Any]], thresholds, report_steps) -> dict[str, Any]:
  """speedup {arm: {thr: scratch/arm iterations}}, iterations_to_reach {arm: {thr: mean}} and
  table {arm: {step: [mean, std]}} (nearest logged step to each report step)."""
  ref = arms["scratch"]
  steps = np.asarray(ref["iterations"])
  a_ref = np.asarray(ref["train_accuracy"], np.float64)
  speed, reach, table = {}, {}, {}
  for arm, r in arms.items():
    acc = np.asarray(r["train_accuracy"], np.float64)
    reach[arm] = {f"{t:g}": float(np.mean(curves.iterations_to_reach(steps, acc, t)))
                  for t in thresholds}
    if arm != "scratch":
      speed[arm] = {f"{t:g}": curves.speedup(steps, a_ref, acc, t) for t in thresholds}
    table[arm] = {}
    for s in report_steps:
      j = int(np.argmin(np.abs(steps - s)))
      table[arm][str(int(steps[j]))] = [float(acc[:, j].mean()), float(acc[:, j].std())]
  return {"speedup": speed, "iterations_to_reach": reach, "table": table}


def fig5_checks(arms: Mapping[str, Mapping[str, Any]], tol: float = 0.02) -> dict[str, Any]:
  """The issue's Fig 5 targets on seed means (present arms only).

  covariance_vs_pretrained_max_gap: max over logged steps of |mean cov - mean pretrained| (<= tol);
  <arm>_margin_first_half: min over logged steps in (0, T/2] of (mean arm - mean scratch) minus
  the larger of the two seed stds (> 0: clearly above scratch); no_rescaling_minus_pretrained_auc:
  mean over steps of (no-rescaling - pretrained) (>= 0: at least as fast).
  """
  out = {}
  mean = {a: np.asarray(r["train_accuracy"], np.float64).mean(0) for a, r in arms.items()}
  std = {a: np.asarray(r["train_accuracy"], np.float64).std(0) for a, r in arms.items()}
  steps = np.asarray(arms["scratch"]["iterations"], np.float64)
  half = (steps > 0) & (steps <= steps[-1] / 2)
  if "covariance" in mean and "pretrained" in mean:
    gap = float(np.max(np.abs(mean["covariance"] - mean["pretrained"])))
    out["covariance_vs_pretrained_max_gap"] = gap
    out["covariance_within_tol_of_pretrained"] = gap <= tol
  for arm in mean:
    if arm == "scratch" or not half.any():
      continue
    margin = (mean[arm] - mean["scratch"] - np.maximum(std[arm], std["scratch"]))[half]
    out[f"{arm}_margin_first_half"] = float(margin.min())
  if "pretrained_no_rescaling" in mean and "pretrained" in mean:
    out["no_rescaling_minus_pretrained_auc"] = float(
        np.mean(mean["pretrained_no_rescaling"] - mean["pretrained"]))
  return out


def transfer_function_summary(builder: ArmBuilder) -> dict[str, Any]:
  return {name: {"lambda": f.knots, "f": f.values, "rest": f.rest}
          for name, f in builder.transfer_functions.items()}


# ----------------------------------------------------------------------------------------------
# The experiment.


def run(config, workdir: str) -> dict[str, Any]:
  """Upstream, every arm downstream, summary; writes results.json, arrays.npz and the figure."""
  t0 = time.time()
  arms_list = check_arms(config.arms)
  data = load_data(config)
  model_up = _model(config, int(config.upstream.num_classes))
  dn = data["num_classes"] if config.downstream.labels == "real" else int(
      config.downstream.num_random_classes)
  model_down = _model(config, dn)
  needs_upstream = any(a not in ("scratch", "pca_whitening", "f_only") for a in arms_list) or (
      "f_only" in arms_list and config.f_only.source == "upstream")
  up = run_upstream(config, workdir, data["x_up"]) if needs_upstream else None
  empty = {"params": {}, "init": {}, "train_accuracy": []}
  builder = ArmBuilder(config, model_down, model_up, up or empty, data, workdir)
  arms = {}
  for arm in arms_list:
    logging.info("transfer: arm %s", arm)
    arms[arm] = run_arm(config, workdir, arm, builder, data)
  thresholds = [float(t) for t in config.speedup_thresholds]
  out = {"arms": arms,
         "upstream": None if up is None else {
             k: up[k] for k in ("train_accuracy", "ok", "min_train_accuracy", "num_steps",
                                "num_classes", "steps", "curve")},
         **summarize(arms, thresholds, list(config.report_steps)),
         "thresholds": thresholds, "checks": fig5_checks(arms)}
  tf = transfer_function_summary(builder)
  if tf:
    save_phase(workdir, "transfer_functions", tf)
  out["transfer_functions"] = load_phase(workdir, "transfer_functions") or {}
  out["data"] = {"sizes": data["sizes"], "name": config.data.name}
  phases = [a for a in arms.values()] + ([up] if up else [])
  out["runtime_s"] = float(sum(p.get("runtime_s", 0.0) for p in phases))
  from rl_align import transfer_plots  # pylint: disable=g-import-not-at-top
  fig = transfer_plots.plot_transfer(out, os.path.join(workdir, config.get("figure_name",
                                                                           "transfer.png")),
                                     title=config.get("title", ""),
                                     reference=config.get("paper_reference", None))
  out["figure"] = os.path.basename(fig)
  results.write_json(workdir, "results.json", out)
  logging.info("transfer: done in %.0f s (this invocation)", time.time() - t0)
  return results.read_json(workdir, "results.json")


def summary_table(out: Mapping[str, Any]) -> str:
  """A plain-text table: train accuracy (mean +- std) per arm at the report steps, test accuracy,
  speed-ups."""
  arms = out["arms"]
  first = next(iter(out["table"].values()))
  cols = list(first)
  lines = ["arm".ljust(24) + "".join(f"it {c}".rjust(15) for c in cols) + "test".rjust(15)
           + "".join(f"x@{t}".rjust(9) for t in out["speedup"].get(next(iter(out["speedup"]), ""), {}))]
  for arm, row in out["table"].items():
    cells = "".join(f"{m:.3f}±{s:.3f}".rjust(15) for m, s in row.values())
    test = f"{arms[arm]['test_accuracy_mean']:.3f}±{arms[arm]['test_accuracy_std']:.3f}".rjust(15)
    sp = "".join((f"{v:.2f}" if v is not None else "nan").rjust(9)
                 for v in out["speedup"].get(arm, {}).values())
    lines.append(arm.ljust(24) + cells + test + sp)
  if out.get("upstream"):
    ua = np.asarray(out["upstream"]["train_accuracy"], np.float64)
    lines.append(f"upstream random-label train accuracy: {ua.mean():.3f} ± {ua.std():.3f} "
                 f"(ok={out['upstream']['ok']})")
  lines.append(f"checks: {out['checks']}")
  return "\n".join(lines)
