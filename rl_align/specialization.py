"""Specialization and negative transfer (PAPER.md section 3): random-label pretraining, then real labels.

For every sweep point (width of the later layers, learning rate, number of random classes K,
upstream length L) a network is trained on K random labels (upstream), its hidden layers are
carried over to a disjoint split with the real labels (downstream, head re-initialized), and its
downstream training speed is compared with training from scratch.  Per-layer ReLU activity
(`rl_align.activity`) is tracked on a fixed probe batch across the switch.

Sweep points share engine runs where the shapes allow it (one upstream and one downstream run per
(width, learning rate)):

- the K values share one upstream run: the head has max(K) outputs and the seeds of point K draw
  their labels in [0, K) (the unused logits are only ever pushed down);
- the upstream lengths L are snapshots of that one run at step L;
- every downstream arm (pretrained / rescaled, each K and L) and the scratch baseline are seed
  blocks of one downstream run started from `init_params`.

Usage::

    from rl_align import specialization
    out = specialization.run(config, workdir)     # experiments/configs/specialization.py
    out["points"]["w=32,lr=0.02,K=50,L=4000,arm=pretrained"]["gain"]

    g = specialization.gain_stats(steps, acc_scratch, acc_pretrained, threshold=0.95)
    d = specialization.activity_drop(steps, active_fraction_after, before, window=20)

results.json: see `run` (documented in the README, "specialization" section).
"""
import copy
import itertools
import os
import time
from typing import Any, Mapping, Sequence

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rl_align import activity
from rl_align import curves
from rl_align import data as data_lib
from rl_align import errors
from rl_align import experiment
from rl_align import init as init_lib
from rl_align import models
from rl_align import results
from rl_align import train
from rl_align.runners import common

ARMS = ("pretrained", "rescaled")
SCRATCH = "scratch"
_FRESH = 17  # fold_in tag of the fresh (scratch / new head) init keys of the downstream seeds


# ----------------------------------------------------------------------------------------------
# Small pure helpers.


def point_id(width, lr, k, length, arm) -> str:
  """The key of one sweep point in results.json, e.g. 'w=32,lr=0.02,K=50,L=4000,arm=pretrained'."""
  return f"w={width},lr={lr:g},K={k},L={length},arm={arm}"


def with_width(model_cfg, field: str, start: int, width: int) -> ml_collections.ConfigDict:
  """A copy of model_cfg whose `field` is `width` (scalar field) or whose entries from `start` on
  are `width` (tuple field, e.g. the later layers of a dense net's `widths`)."""
  cfg = ml_collections.ConfigDict(copy.deepcopy(model_cfg.to_dict()))
  if field not in cfg:
    raise errors.ConfigError(
        f"config.sweep.width_field={field!r} is not a field of config.model ({sorted(cfg)}). "
        "Fix: name the model field that sets the later layers' width, e.g. 'widths'.")
  old = cfg[field]
  if isinstance(old, (tuple, list)):
    if not 0 <= start < len(old):
      raise errors.ConfigError(
          f"config.sweep.width_from={start} is outside config.model.{field}={tuple(old)}. "
          f"Fix: use an index in [0, {len(old)}) (the first later layer).")
    cfg[field] = tuple(old[:start]) + (int(width),) * (len(old) - start)
  else:
    cfg[field] = type(old)(width) if isinstance(old, (int, float)) else width
  return cfg


def flatten(params) -> dict[str, np.ndarray]:
  """Nested params -> {"layer/.../kernel": array} (npz friendly)."""
  return {"/".join(k): np.asarray(v)
          for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(params)).items()}


def unflatten(flat: Mapping[str, Any]):
  return flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def head_name(params) -> str:
  """The output layer: the last layer in `models.layer_names` (forward) order."""
  return models.layer_names(params)[-1]


def transfer_init(snapshot, fresh, init_snapshot=None):
  """Downstream starting params of one arm, stacked over seeds: the upstream `snapshot` with the
  head taken from `fresh`; with `init_snapshot` (the upstream init) every tensor is first rescaled
  to its init L2 norm (the weight-scaling control, `init.weight_scaling_control`)."""
  head = head_name(fresh)
  if init_snapshot is None:
    return init_lib.replace_layer(snapshot, fresh, head)
  s = jax.tree.leaves(snapshot)[0].shape[0]
  seed = lambda tree, i: jax.tree.map(lambda a: np.asarray(a)[i], tree)
  per = [init_lib.weight_scaling_control(seed(snapshot, i), seed(init_snapshot, i),
                                         seed(fresh, i), head) for i in range(s)]
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *per)


def gain_stats(steps, acc_scratch, acc_arm, threshold: float, *, n_boot: int = 2000,
               seed: int = 0) -> dict[str, Any]:
  """Downstream speed-up of an arm over scratch: mean iterations of scratch / of the arm.

  Args:
    steps: [T] logged steps (starting at 0 preferably).
    acc_scratch, acc_arm: [S, T] accuracy curves of the two arms.
    threshold: the accuracy both arms must reach.

  Returns gain (`curves.speedup`, nan when a seed never reaches the threshold), gain_censored
  (never-reached seeds counted at the last step; then a bound, `censored` says which way),
  gain_ci [5%, 95%] (bootstrap over seeds of both arms, censored counts), gain_seed_std (std of
  scratch_mean / arm_seed), iterations and reached fractions of both arms, and auc_difference
  (mean over the run of arm minus scratch seed-mean accuracy; > 0: the arm is ahead).
  """
  steps = np.asarray(steps, np.float64)
  a_s, a_a = np.atleast_2d(acc_scratch), np.atleast_2d(acc_arm)
  it_s = curves.iterations_to_reach(steps, a_s, threshold)
  it_a = curves.iterations_to_reach(steps, a_a, threshold)
  budget = float(steps[-1])
  c_s, c_a = np.minimum(it_s, budget), np.minimum(it_a, budget)
  c_s, c_a = np.maximum(c_s, 1e-9), np.maximum(c_a, 1e-9)
  cens_s, cens_a = ~np.isfinite(it_s), ~np.isfinite(it_a)
  censored = {(False, False): "none", (False, True): "upper_bound", (True, False): "lower_bound",
              (True, True): "both"}[(bool(cens_s.any()), bool(cens_a.any()))]
  rng = np.random.default_rng(seed)
  bs = c_s[rng.integers(0, len(c_s), (n_boot, len(c_s)))].mean(1)
  ba = c_a[rng.integers(0, len(c_a), (n_boot, len(c_a)))].mean(1)
  ratio = bs / ba
  per_seed = c_s.mean() / c_a
  span = max(steps[-1] - steps[0], 1e-12)
  diff = a_a.mean(0) - a_s.mean(0)
  auc = float(np.sum((diff[1:] + diff[:-1]) / 2 * np.diff(steps)) / span) if len(steps) > 1 else 0.0
  return {
      "gain": curves.speedup(steps, a_s, a_a, threshold),
      "gain_censored": float(c_s.mean() / c_a.mean()), "censored": censored,
      "gain_ci": [float(np.percentile(ratio, 5)), float(np.percentile(ratio, 95))],
      "gain_seed_std": float(per_seed.std()), "gain_seeds": per_seed,
      "iterations": it_a, "iterations_scratch": it_s,
      "reached": float(np.mean(~cens_a)), "reached_scratch": float(np.mean(~cens_s)),
      "auc_difference": auc,
  }


def activity_drop(steps, after, before, window: float) -> dict[str, Any]:
  """How far a layer's activity falls right after the switch.

  Args:
    steps: [T] downstream steps (0 = the switch).
    after: [S, T] the stat (e.g. active fraction) over the downstream run.
    before: [S] its value just before the switch.
    window: steps after the switch to look in.
  Returns before / after (the minimum over 0 < step <= window) / drop = before - after, seed means
  with drop_std, and relative_drop = drop / before.
  """
  steps, after, before = np.asarray(steps), np.atleast_2d(after), np.asarray(before, np.float64)
  mask = (steps > 0) & (steps <= window)
  if not mask.any():
    raise errors.ConfigError(
        f"no downstream eval step lies in (0, {window}]: the drop at the switch cannot be measured. "
        "Fix: lower downstream.eval_every_steps or raise downstream.drop_window.")
  low = np.nanmin(after[:, mask], axis=1)
  drop = before - low
  b = float(before.mean())
  return {"before": b, "after": float(low.mean()), "drop": float(drop.mean()),
          "drop_std": float(drop.std()), "relative_drop": float(drop.mean() / b) if b > 0 else 0.0}


# ----------------------------------------------------------------------------------------------
# Data.


def load_data(config):
  """(x_up, x_down, y_down, x_test, y_test, num_real_classes), standardized with upstream stats."""
  ds = common.load_split(config.data, "train")
  sizes = {"upstream": int(config.split.upstream), "downstream": int(config.split.downstream)}
  n_test = int(config.split.get("test", 0))
  if n_test:
    sizes["test"] = n_test
  idx = data_lib.split_indices(len(ds), sizes, seed=int(config.split.seed))
  up, down = ds.subset(idx["upstream"]), ds.subset(idx["downstream"])
  if n_test:
    test = ds.subset(idx["test"])
  elif config.data.name == "digits":
    raise errors.ConfigError(
        "digits has no test split: config.split.test is 0. Fix: carve one out of the 1797 "
        "examples, e.g. --config.split.test=397.")
  else:
    test = common.load_split(config.data, "test")
  xs = (up.x, down.x, test.x)
  if config.data.standardize:
    xs = common.standardize_like(*xs)
  return xs[0], xs[1], down.y, xs[2], test.y, ds.num_classes


# ----------------------------------------------------------------------------------------------
# Engine pieces.


def _stack_init(model, x_shape, keys):
  init = jax.jit(jax.vmap(lambda k: model.init(k, jnp.zeros((1,) + tuple(x_shape[1:])))["params"]))
  return jax.tree.map(np.asarray, init(keys))


def accuracy(model, stacked_params, x, y, batch_size: int = 512) -> np.ndarray:
  """[S] accuracy of each seed's params on (x, y); inputs are padded to whole batches, so every
  call with the same model and batch size reuses one compiled program."""
  fn = jax.jit(lambda p, xb: jnp.argmax(model.apply({"params": p}, xb), -1))
  n = len(x)
  bs = min(batch_size, n)
  pad = -n % bs
  xp = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
  s = jax.tree.leaves(stacked_params)[0].shape[0]
  out = np.zeros(s)
  for i in range(s):
    p = jax.tree.map(lambda a, i=i: a[i], stacked_params)
    pred = np.concatenate([np.asarray(fn(p, xp[j:j + bs])) for j in range(0, len(xp), bs)])[:n]
    out[i] = float(np.mean(pred == y))
  return out


def _engine_cfg(config, lr, num_steps, eval_every, num_seeds, seed, train_eval_examples):
  cfg = ml_collections.ConfigDict(copy.deepcopy(config.train.to_dict()))
  cfg.learning_rate = float(lr)
  cfg.num_steps = int(num_steps)
  cfg.eval_every_steps = cfg.log_every_steps = int(eval_every)
  cfg.num_seeds = int(num_seeds)
  cfg.seed = int(seed)
  cfg.train_eval_examples = int(train_eval_examples)
  cfg.snapshot_steps = ()
  cfg.snapshot_epochs = ()
  return cfg


def _curve(rows, key, ids):
  """[S, T] values of metrics `key` for seed ids `ids` (ordered), steps [T]."""
  rows = [r for r in rows if key in r]
  steps = sorted({int(r["step"]) for r in rows})
  si, ti = {s: i for i, s in enumerate(ids)}, {t: i for i, t in enumerate(steps)}
  out = np.full((len(ids), len(steps)), np.nan)
  for r in rows:
    if int(r["seed"]) in si:
      out[si[int(r["seed"])], ti[int(r["step"])]] = np.nan if r[key] is None else float(r[key])
  return np.array(steps), out


def _validate(config):
  sw, dn = config.sweep, config.downstream
  for field in ("widths", "learning_rates", "num_random_classes", "upstream_steps"):
    if not len(sw[field]):
      raise errors.ConfigError(f"config.sweep.{field} is empty. Fix: give at least one value.")
  every = int(config.upstream.eval_every_steps)
  if every < 1:
    raise errors.ConfigError("config.upstream.eval_every_steps must be >= 1. Fix: e.g. 50.")
  bad = [int(l) for l in sw.upstream_steps if int(l) < 1 or int(l) % every]
  if bad:
    raise errors.ConfigError(
        f"config.sweep.upstream_steps {bad} are not positive multiples of "
        f"config.upstream.eval_every_steps={every}, so activity is not measured at the switch. "
        "Fix: use multiples of it (or lower eval_every_steps).")
  if not 0 < float(dn.threshold) <= 1:
    raise errors.ConfigError(f"config.downstream.threshold must be in (0, 1], got {dn.threshold}.")
  unknown = [a for a in config.arms if a not in ARMS]
  if unknown or not config.arms:
    raise errors.ConfigError(f"config.arms={tuple(config.arms)} must be a non-empty subset of "
                             f"{ARMS}. Fix: e.g. --config.arms=pretrained.")
  if int(dn.eval_every_steps) < 1 or int(dn.num_steps) < int(dn.eval_every_steps):
    raise errors.ConfigError(
        "config.downstream needs 1 <= eval_every_steps <= num_steps. Fix: e.g. 5 and 400.")


# ----------------------------------------------------------------------------------------------
# One (width, learning rate) cell: one upstream run, one downstream run.


def downstream_blocks(config) -> list[tuple[str, int | None, int | None]]:
  """Seed blocks of the downstream run, num_seeds seeds each: (arm, upstream length, K index);
  block 0 is the scratch baseline."""
  lengths = sorted(int(l) for l in config.sweep.upstream_steps)
  ks = range(len(config.sweep.num_random_classes))
  return [(SCRATCH, None, None)] + [(a, l, g) for a in config.arms for l in lengths for g in ks]


def downstream_init(blocks, snaps, fresh, ns: int):
  """Stacked downstream starting params: block b's ns seeds start from `fresh` (scratch) or from
  the upstream snapshot of its length and K group (`transfer_init`, with fresh heads)."""
  parts = []
  for b, (arm, length, g) in enumerate(blocks):
    f = jax.tree.map(lambda a, b=b: a[b * ns:(b + 1) * ns], fresh)
    if arm == SCRATCH:
      parts.append(f)
      continue
    group = lambda tree, g=g: jax.tree.map(lambda a: a[g * ns:(g + 1) * ns], tree)
    parts.append(transfer_init(group(snaps[length]), f,
                               group(snaps[0]) if arm == "rescaled" else None))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def _with_start(curves_, start, steps):
  """Downstream curves {layer: {stat: [S, T]}} with the step-0 values `start` prepended."""
  return {layer: {"steps": steps, **{k: np.concatenate([start[layer][k][:, None], c[k]], 1)
                                     for k in activity.STATS}} for layer, c in curves_.items()}


def point_activity(up_act, up_act0, d_act, d_steps, length: int, ug, sl, sl0, window: float):
  """One point's activity curves (global steps, seed means/stds) and its drops at the switch.

  up_act / d_act: upstream / downstream curves {layer: {"steps", stat: [S, T]}} (d_act starts at
  downstream step 0); up_act0: upstream step-0 values; ug / sl / sl0: the point's upstream seeds,
  its downstream seeds and the scratch seeds.
  """
  acts, drops = {}, {}
  for layer in d_act:
    keep = up_act[layer]["steps"] <= length
    curve = {"steps": np.concatenate([[0], up_act[layer]["steps"][keep], length + d_steps[1:]])}
    for stat in activity.STATS:
      full = np.concatenate([up_act0[layer][stat][ug, None], up_act[layer][stat][ug][:, keep],
                             d_act[layer][stat][sl, 1:]], axis=1)
      curve[stat], curve[stat + "_std"] = full.mean(0), full.std(0)
    acts[layer] = curve
    act, dead = d_act[layer]["active_fraction"], d_act[layer]["dead_fraction"]
    d = activity_drop(d_steps, act[sl], act[sl, 0], window)
    in_win = (d_steps > 0) & (d_steps <= window)
    d["dead_before"] = float(dead[sl, 0].mean())
    d["dead_after"] = float(np.nanmax(dead[sl][:, in_win], axis=1).mean())
    # Baselines: the same window for the scratch seeds, and the change over the last upstream
    # eval interval before the switch (a sharp drop starts from a flat upstream curve).
    base = activity_drop(d_steps, act[sl0], act[sl0, 0], window)
    d["scratch_before"], d["scratch_drop"] = base["before"], base["drop"]
    d["scratch_relative_drop"] = base["relative_drop"]
    ua = up_act[layer]["active_fraction"][ug][:, keep]
    d["pre_switch_change"] = float((ua[:, -1] - ua[:, -2]).mean()) if ua.shape[1] > 1 else None
    drops[layer] = d
  return acts, drops


def run_cell(config, workdir: str, width: int, lr: float, datasets) -> dict[str, Any]:
  """Upstream (all K and L) + downstream (all arms) for one (width, lr); returns its points."""
  x_up, x_down, y_down, x_test, y_test, n_real = datasets
  sw, dn = config.sweep, config.downstream
  ks = [int(k) for k in sw.num_random_classes]
  lengths = sorted(int(l) for l in sw.upstream_steps)
  ns, root = int(config.train.num_seeds), int(config.train.seed)
  mcfg = with_width(config.model, sw.width_field, int(sw.width_from), width)
  mcfg.num_classes = max(ks)
  up_model = models.build(mcfg)
  mcfg.num_classes = n_real
  down_model = models.build(mcfg)
  probe_x = x_down[:int(config.probe_examples)]
  layers = list(config.get("activity_layers") or []) or None
  probe = activity.make_probe_fn(probe_x, layers=layers)

  # Upstream: K groups of ns seeds, labels of group g in [0, K_g); snapshots at 0 and every L.
  ucfg = _engine_cfg(config, lr, lengths[-1], config.upstream.eval_every_steps, len(ks) * ns, root,
                     min(len(x_up), int(config.train.train_eval_examples)))
  ucfg.snapshot_steps = tuple([0] + lengths)
  ids_up = train.seed_ids(ucfg)
  labels = np.concatenate([train.random_labels(root, ids_up[g * ns:(g + 1) * ns], len(x_up), k)
                           for g, k in enumerate(ks)])
  up = train.train(up_model, ucfg, x_up, labels, workdir=workdir, snapshot_fn=flatten,
                   probe_fn=probe, name="upstream")
  snaps = {step: unflatten(s) for step, s in up.snapshots.items()}
  up_act = activity.curves_from_metrics(up.metrics, phase="upstream", seeds=ids_up)
  up_steps, up_acc = _curve(up.metrics, "train_accuracy", ids_up)

  # Downstream: every arm and the scratch seeds in one run, all from init_params.
  blocks = downstream_blocks(config)
  down_lr = float(dn.learning_rate) or lr
  dcfg = _engine_cfg(config, down_lr, dn.num_steps, dn.eval_every_steps, len(blocks) * ns,
                     root + 1, min(len(x_down), int(dn.train_eval_examples)))
  ids_down = train.seed_ids(dcfg)
  keys = jnp.stack([train.seed_key(root + 1, i, _FRESH) for i in ids_down])
  fresh = _stack_init(down_model, x_down.shape, keys)
  init = downstream_init(blocks, snaps, fresh, ns)
  m = dcfg.train_eval_examples
  acc0 = accuracy(down_model, init, x_down[:m], y_down[:m])
  # Activity at both starts in one compiled call: the upstream init (its head swapped for a
  # downstream-sized one, which leaves every hidden activation unchanged) and every downstream init.
  s_up = len(ids_up)
  up0 = init_lib.replace_layer(snaps[0], jax.tree.map(lambda a: a[:s_up], fresh), head_name(fresh))
  both = activity.measure(down_model, jax.tree.map(lambda a, b: np.concatenate([a, b]), up0, init),
                          probe_x, layers=layers)
  up_act0 = {l: {k: v[:s_up] for k, v in st.items()} for l, st in both.items()}
  act0 = {l: {k: v[s_up:] for k, v in st.items()} for l, st in both.items()}
  down = train.train(down_model, dcfg, x_down, y_down, workdir=workdir, init_params=init,
                     probe_fn=probe, name="downstream")
  test_acc = accuracy(down_model, down.params, x_test, y_test)
  d_steps, d_acc = _curve(down.metrics, "train_accuracy", ids_down)
  d_steps = np.concatenate([[0], d_steps])
  d_acc = np.concatenate([acc0[:, None], d_acc], axis=1)
  d_act = _with_start(activity.curves_from_metrics(down.metrics, phase="downstream", seeds=ids_down),
                      act0, d_steps)

  sl0 = slice(0, ns)
  scratch_act = {layer: _summ(d_act[layer], sl0, d_steps) for layer in d_act}
  out = {}
  for b, (arm, length, g) in enumerate(blocks[1:], start=1):
    sl, ug = slice(b * ns, (b + 1) * ns), slice(g * ns, (g + 1) * ns)
    acts, drops = point_activity(up_act, up_act0, d_act, d_steps, length, ug, sl, sl0,
                                 float(dn.drop_window))
    at_l = up_steps == length
    out[point_id(width, lr, ks[g], length, arm)] = {
        "width": width, "learning_rate": lr, "downstream_learning_rate": down_lr,
        "num_random_classes": ks[g], "upstream_steps": length, "arm": arm, "switch_step": length,
        **gain_stats(d_steps, d_acc[sl0], d_acc[sl], float(dn.threshold), seed=b),
        "threshold": float(dn.threshold),
        "upstream_train_accuracy": up_acc[ug][:, at_l][:, 0] if at_l.any() else None,
        "downstream_steps": d_steps, "accuracy": d_acc[sl].mean(0), "accuracy_std": d_acc[sl].std(0),
        "accuracy_scratch": d_acc[sl0].mean(0),
        "final_train_accuracy": d_acc[sl][:, -1], "test_accuracy": test_acc[sl],
        "test_accuracy_scratch": test_acc[sl0],
        "diverged_upstream": int(up.diverged[ug].sum()), "diverged": int(down.diverged[sl].sum()),
        "activity": acts, "activity_drop": drops, "scratch_activity": scratch_act,
    }
  return out


def _summ(curve, sl, steps):
  return {"steps": steps, **{s: curve[s][sl].mean(0) for s in activity.STATS},
          **{s + "_std": curve[s][sl].std(0) for s in activity.STATS}}


# ----------------------------------------------------------------------------------------------
# The experiment.


def find_point(points: Mapping[str, Any], **coords) -> str | None:
  """The id of the point whose fields equal `coords` (None if none does)."""
  for pid, p in points.items():
    if all(p.get(k) == v or (isinstance(v, float) and np.isclose(p.get(k, np.nan), v))
           for k, v in coords.items()):
      return pid
  return None


def run(config, workdir: str) -> dict[str, Any]:
  """Runs every (width, lr) cell (resuming finished ones from workdir), writes results.json + plots.

  results.json (seed-mean curves; "steps" of `activity` are global: upstream 0..L, then L + the
  downstream steps, so the switch is at `switch_step` = L)::

    {"points": {point_id: {
        "width", "learning_rate", "downstream_learning_rate", "num_random_classes",
        "upstream_steps", "arm" ("pretrained" | "rescaled"), "switch_step", "threshold",
        "gain", "gain_censored", "censored", "gain_ci", "gain_seed_std", "gain_seeds" [S],
        "iterations" [S], "iterations_scratch" [S], "reached", "reached_scratch",
        "auc_difference",                                    # see gain_stats
        "upstream_train_accuracy" [S],                        # random-label fit at step L
        "downstream_steps" [T], "accuracy" [T], "accuracy_std" [T], "accuracy_scratch" [T],
        "final_train_accuracy" [S], "test_accuracy" [S], "test_accuracy_scratch" [S],
        "diverged_upstream", "diverged",                     # counts of frozen seeds
        "cell_runtime_s",                                    # its (width, lr) cell's runtime
        "activity": {layer: {"steps", "active_fraction", "dead_fraction", "mean_activation",
                             "<stat>_std"}},
        "activity_drop": {layer: {"before", "after", "drop", "drop_std", "relative_drop",
                                  "dead_before", "dead_after", "scratch_before", "scratch_drop",
                                  "scratch_relative_drop", "pre_switch_change"}},
        "scratch_activity": {layer: {...}}}},                # downstream steps, scratch seeds
     "highlight": {"negative": point_id, "wide": point_id}, "layers", "later_layers",
     "threshold", "num_seeds", "figures", "runtime_s", "cells_runtime_s"}
  """
  _validate(config)
  t0 = time.time()
  datasets = load_data(config)
  sw = config.sweep
  points = {}
  for width, lr in itertools.product(sw.widths, sw.learning_rates):
    cell = os.path.join(workdir, f"w={width}_lr={lr:g}")
    done = results.read_json(cell, "points.json")
    if done is None:
      os.makedirs(cell, exist_ok=True)
      logging.info("specialization: cell width=%s lr=%g", width, lr)
      tc = time.time()
      done = run_cell(config, cell, int(width), float(lr), datasets)
      for p in done.values():
        p["cell_runtime_s"] = time.time() - tc
      results.write_json(cell, "points.json", done)
      done = results.read_json(cell, "points.json")
    points.update(done)
  layers = models.sort_layers(next(iter(points.values()))["activity"])
  later_from = int(config.get("later_layers_from", -1))
  later_from = int(sw.width_from) if later_from < 0 else later_from
  out = {"points": points, "layers": layers, "later_layers": layers[later_from:] or layers,
         "threshold": float(config.downstream.threshold), "num_seeds": int(config.train.num_seeds),
         "highlight": highlights(config, points)}
  out["figures"] = plot_all(out, workdir, config)
  out["runtime_s"] = time.time() - t0      # this invocation (finished cells are read back)
  cells = {(p["width"], p["learning_rate"]): p.get("cell_runtime_s", 0.0) for p in points.values()}
  out["cells_runtime_s"] = float(sum(cells.values()))   # training + analysis of every cell
  results.write_json(workdir, "results.json", out)
  return out


def highlights(config, points) -> dict[str, str | None]:
  """Ids of the configured negative-transfer point and its wide variant (config.highlight)."""
  h = config.get("highlight")
  if not h:
    return {}
  neg = dict(h.negative)
  wide = dict(neg, width=h.wide_width)
  return {"negative": find_point(points, **neg), "wide": find_point(points, **wide)}


def summary_table(out: Mapping[str, Any]) -> str:
  """One line per point: gain with its 5-95% bootstrap interval and the later layers' drop."""
  later = out.get("later_layers") or out["layers"]
  lines = [f"threshold {out['threshold']}, {out['num_seeds']} seeds per point; gain = scratch "
           "iterations / arm iterations ('<x': arm censored at the budget, so gain < x); "
           "drop = active fraction before -> min within the window after the switch"]
  for pid, p in out["points"].items():
    lo, hi = p["gain_ci"]
    drops = " ".join(f"{l}:{p['activity_drop'][l]['before']:.2f}->{p['activity_drop'][l]['after']:.2f}"
                     for l in later)
    up = p.get("upstream_train_accuracy")
    up = f"{np.mean(up):.2f}" if up is not None else "nan"
    lines.append(f"{pid:45s} gain {_gain_text(p):>6s} [{lo:.2f}, {hi:.2f}] seed-sd "
                 f"{p['gain_seed_std']:.2f} up-acc {up} | {drops}")
  return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg; files only).


def _figure(**kw):
  """A matplotlib Figure not registered with pyplot: no backend switch, nothing to close."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  return Figure(**kw)


def _gain_text(p) -> str:
  g = p["gain"]
  if g is None or not np.isfinite(g):
    if p["censored"] == "both":
      return "n/r"   # neither arm reached the threshold in every seed
    bound = {"upper_bound": "<", "lower_bound": ">"}[p["censored"]]
    return f"{bound}{p['gain_censored']:.2f}"
  return f"{g:.2f}"


def plot_activity(out: Mapping[str, Any], ids: Sequence[str], path: str,
                  titles: Sequence[str] | None = None) -> str:
  """Rows = points; columns = ReLU layers (active / dead fraction over steps relative to the
  switch, symlog x) and the downstream train accuracy of the arm vs scratch."""
  layers = out["layers"]
  fig = _figure(figsize=(3.2 * (len(layers) + 1), 2.7 * len(ids)))
  axes = fig.subplots(len(ids), len(layers) + 1, squeeze=False)
  for r, pid in enumerate(ids):
    p = out["points"][pid]
    sw = p["switch_step"]
    for c, layer in enumerate(layers):
      ax, a = axes[r, c], p["activity"][layer]
      x = np.asarray(a["steps"]) - sw
      for stat, style, label in (("active_fraction", "-", "active"), ("dead_fraction", "--", "dead")):
        m, sd = np.asarray(a[stat]), np.asarray(a[stat + "_std"])
        ax.plot(x, m, style, color="C0", label=f"{label} (pretrained)")
        ax.fill_between(x, m - sd, m + sd, color="C0", alpha=0.15)
      sa = p["scratch_activity"][layer]
      ax.plot(np.asarray(sa["steps"]), sa["active_fraction"], "-", color="0.5", lw=1,
              label="active (scratch)")
      ax.axvline(0, color="C3", lw=1, label="switch")
      ax.set_xscale("symlog", linthresh=max(1.0, 2 * float(np.diff(sa["steps"][:2])[0])))
      ax.set_ylim(0, 1)
      ax.grid(alpha=0.3)
      d = p["activity_drop"][layer]
      ax.set_title(f"{layer}: {d['before']:.2f}->{d['after']:.2f} "
                   f"(scratch {d['scratch_before']:.2f}->{d['scratch_before'] - d['scratch_drop']:.2f})",
                   fontsize=8)
      if r == len(ids) - 1:
        ax.set_xlabel("step - switch (symlog)", fontsize=8)
      if c == 0:
        name = titles[r] if titles else pid
        ax.set_ylabel(f"{name}\nfraction of ReLUs", fontsize=8)
    ax = axes[r, -1]
    steps = np.asarray(p["downstream_steps"])
    ax.plot(steps, p["accuracy"], color="C0", label=p["arm"])
    ax.fill_between(steps, np.asarray(p["accuracy"]) - np.asarray(p["accuracy_std"]),
                    np.asarray(p["accuracy"]) + np.asarray(p["accuracy_std"]), color="C0", alpha=0.15)
    ax.plot(steps, p["accuracy_scratch"], color="0.5", label="scratch")
    ax.axhline(p["threshold"], color="k", lw=0.8, ls=":")
    ax.set_title(f"downstream train acc, gain {_gain_text(p)}", fontsize=8)
    ax.set_xlabel("downstream step", fontsize=8)
    ax.grid(alpha=0.3)
    if r == 0:
      ax.legend(fontsize=7)
  axes[0, 0].legend(fontsize=6, loc="lower left")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  return path


def _heat(ax, grid, xs, ys, texts, xlabel, ylabel, title):
  logg = np.log2(np.clip(np.asarray(grid, np.float64), 1 / 8, 8))
  im = ax.imshow(logg, cmap="RdBu", vmin=-1.5, vmax=1.5, origin="lower", aspect="auto")
  for i in range(len(ys)):
    for j in range(len(xs)):
      dark = np.isfinite(logg[i, j]) and abs(logg[i, j]) > 0.9
      ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=7,
              color="w" if dark else "k")
  ax.set_xticks(range(len(xs)), [str(x) for x in xs], fontsize=7)
  ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys], fontsize=7)
  ax.set_xlabel(xlabel, fontsize=8)
  ax.set_ylabel(ylabel, fontsize=8)
  ax.set_title(title, fontsize=8)
  return im


def plot_gain(out: Mapping[str, Any], config, path: str) -> str:
  """Gain heatmaps: width x learning rate (main K, L), width x K (main lr, L), and gain vs the
  upstream length per width (main lr and the largest lr, main K); red = pretrained slower."""
  sw = config.sweep
  main = dict(config.highlight.negative) if config.get("highlight") else {}
  arm = main.get("arm", "pretrained")
  k0 = main.get("num_random_classes", sw.num_random_classes[-1])
  l0 = main.get("upstream_steps", max(sw.upstream_steps))
  lr0 = main.get("learning_rate", sw.learning_rates[-1])
  pts = out["points"]

  def cell(w, lr, k, l):
    pid = point_id(w, float(lr), k, l, arm)
    p = pts.get(pid)
    if p is None:
      return np.nan, ""
    if p["censored"] == "both":
      return np.nan, _gain_text(p)
    return p["gain_censored"], _gain_text(p)
  ws = list(sw.widths)
  crit_lrs = sorted({float(lr0), float(max(sw.learning_rates))})
  fig = _figure(figsize=(4.6 * (2 + len(crit_lrs)), 3.8), layout="constrained")
  axes = fig.subplots(1, 2 + len(crit_lrs))
  pairs = [[cell(w, lr, k0, l0) for w in ws] for lr in sw.learning_rates]
  im = _heat(axes[0], [[v for v, _ in r] for r in pairs], ws, list(sw.learning_rates),
             [[t for _, t in r] for r in pairs], "width of later layers", "learning rate",
             f"gain ({arm}), K={k0}, L={l0}")
  pairs = [[cell(w, lr0, k, l0) for w in ws] for k in sw.num_random_classes]
  _heat(axes[1], [[v for v, _ in r] for r in pairs], ws, list(sw.num_random_classes),
        [[t for _, t in r] for r in pairs], "width of later layers", "random classes K",
        f"gain ({arm}), lr={lr0:g}, L={l0}")
  ls = sorted(int(l) for l in sw.upstream_steps)
  for ax, lr in zip(axes[2:], crit_lrs):
    for j, w in enumerate(ws):
      vals = np.array([cell(w, lr, k0, l)[0] for l in ls], np.float64)
      ax.plot(ls, vals, "o-", color=f"C{j}", label=f"width {w}")
      cens = [pts.get(point_id(w, float(lr), k0, l, arm), {}).get("censored", "none") != "none"
              for l in ls]
      if any(cens):  # a censored gain is a bound: hollow marker
        ax.plot(np.array(ls)[cens], vals[cens], "o", mfc="w", color=f"C{j}")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xticks(ls, [str(l) for l in ls])
    ax.minorticks_off()
    ax.set_yscale("log", base=2)
    ax.set_xlabel("upstream steps L (snapshots of one run)", fontsize=8)
    ax.set_ylabel("gain (scratch its / pretrained its)", fontsize=8)
    ax.set_title(f"critical stage: lr={lr:g}, K={k0} (hollow: censored bound)", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  cb = fig.colorbar(im, ax=axes[1], shrink=0.9, pad=0.02)
  cb.set_label("log2 gain (blue: faster than scratch)", fontsize=8)
  fig.savefig(path, dpi=80)
  return path


def plot_all(out: Mapping[str, Any], workdir: str, config) -> list[str]:
  """specialization_activity.png (highlighted points, else the first) and specialization_gain.png."""
  h = out.get("highlight") or {}
  ids = [h[k] for k in ("negative", "wide") if h.get(k)] or [next(iter(out["points"]))]
  titles = [k for k in ("negative", "wide") if h.get(k)] or None
  titles = [f"{t}: w={out['points'][i]['width']}" for t, i in zip(titles, ids)] if titles else None
  return [plot_activity(out, ids, os.path.join(workdir, "specialization_activity.png"), titles),
          plot_gain(out, config, os.path.join(workdir, "specialization_gain.png"))]
