"""The specialization sweep (the paper's section 3): per (width, learning rate) cell one upstream
and one downstream engine run, every point's gain and activity, the figures.

    from rl_align.runners import specialization
    out = specialization.run(config, workdir)     # experiments/configs/specialization.py
    out["points"]["w=32,lr=0.02,K=50,L=4000,arm=pretrained"]["gain"]

The pieces and statistics are `rl_align.specialization`; finished cells are read back from
workdir/w=<width>_lr=<lr>/points.json, an unfinished one resumes from its engine checkpoints.
"""
import itertools
import os
import time
from typing import Generator

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from rl_align import activity
from rl_align import claims
from rl_align import curves
from rl_align import init as init_lib
from rl_align import models
from rl_align import results
from rl_align import seeds
from rl_align import specialization as lib
from rl_align import train
from rl_align.plots import specialization as plots
from rl_align.runners import common

_FRESH = 17  # fold_in tag of the fresh (scratch / new head) init keys of the downstream seeds


def _stack_init(model, example_shape, keys):
  init = jax.jit(jax.vmap(lambda k: model.init(k, jnp.zeros((1,) + tuple(example_shape)))["params"]))
  return jax.tree.map(np.asarray, init(keys))


def _phase_config(config, lr, num_steps, eval_every, num_seeds, seed, train_eval_examples):
  return common.engine_config(
      config, seed, learning_rate=float(lr), num_steps=int(num_steps),
      eval_every_steps=int(eval_every), log_every_steps=int(eval_every), num_seeds=int(num_seeds),
      train_eval_examples=int(train_eval_examples))


def _with_start(curves_, start, steps):
  """Downstream curves {layer: {stat: [S, T]}} with the step-0 values `start` prepended."""
  return {layer: {"steps": steps, **{k: np.concatenate([start[layer][k][:, None], c[k]], 1)
                                     for k in activity.STATS}} for layer, c in curves_.items()}


def _cell_models(config, width: int, ks, n_real: int):
  """(upstream model with a head of max K, downstream model with n_real classes) at `width`."""
  sw = config.sweep
  mcfg = lib.with_width(config.model, sw.width_field, int(sw.width_from), width)
  mcfg.num_classes = max(ks)
  up_model = models.build(mcfg)
  mcfg.num_classes = n_real
  return up_model, models.build(mcfg)


def _upstream(config, workdir: str, lr: float, data, up_model, probe, ks, lengths) -> Generator:
  """K groups of ns seeds, labels of group g in [0, K_g); snapshots at 0 and every L."""
  ns, root, n = int(config.train.num_seeds), int(config.train.seed), data.sizes["upstream"]
  ucfg = _phase_config(config, lr, lengths[-1], config.upstream.eval_every_steps, len(ks) * ns,
                       root, min(n, int(config.train.train_eval_examples)))
  ucfg.snapshot_steps = tuple([0] + lengths)
  ids_up = seeds.seed_ids(ucfg)
  labels = common.random_labels(data, "upstream", root, ids_up, np.repeat(ks, ns))
  x_up, labels = common.train_inputs(data, "upstream", ucfg, labels)
  up = yield train.call(up_model, ucfg, x_up, labels, workdir=workdir, snapshot_fn=common.flatten,
                        probe_fn=probe, name="upstream")
  up_steps, c = curves.from_metrics(up.metrics, ["train_accuracy"], seeds=ids_up)
  return {"res": up, "ids": ids_up, "steps": up_steps, "acc": c["train_accuracy"],
          "snaps": {step: common.unflatten(s) for step, s in up.snapshots.items()},
          "act": activity.curves_from_metrics(up.metrics, phase="upstream", seeds=ids_up)}


def _start_activity(down_model, snaps, fresh, init, s_up: int, probe_x, layers):
  """Activity at both starts in one compiled call: the upstream init (its head swapped for a
  downstream-sized one, which leaves every hidden activation unchanged) and every downstream init.
  Returns (upstream start, downstream start)."""
  up0 = init_lib.replace_layer(snaps[0], jax.tree.map(lambda a: a[:s_up], fresh),
                               lib.head_name(fresh))
  both = activity.measure(down_model, jax.tree.map(lambda a, b: np.concatenate([a, b]), up0, init),
                          probe_x, layers=layers)
  return ({l: {k: v[:s_up] for k, v in st.items()} for l, st in both.items()},
          {l: {k: v[s_up:] for k, v in st.items()} for l, st in both.items()})


def _downstream(config, workdir: str, lr: float, data, down_model, probe, layers,
                up: dict) -> Generator:
  """Every arm and the scratch seeds in one run, all from their downstream inits."""
  dn, ns, root = config.downstream, int(config.train.num_seeds), int(config.train.seed)
  part = data.parts["downstream"]
  blocks = lib.downstream_blocks(config)
  down_lr = float(dn.learning_rate) or lr
  dcfg = _phase_config(config, down_lr, dn.num_steps, dn.eval_every_steps, len(blocks) * ns,
                       root + 1, min(len(part), int(dn.train_eval_examples)))
  ids_down = seeds.seed_ids(dcfg)
  keys = jnp.stack([seeds.seed_key(root + 1, i, _FRESH) for i in ids_down])
  fresh = _stack_init(down_model, common.example_shape(part), keys)
  init = lib.downstream_init(blocks, up["snaps"], fresh, ns)
  probe_x = common.head(part, int(config.probe_examples))[0]
  x_down, y_down = common.train_inputs(data, "downstream", dcfg,
                                       common.real_labels(data, "downstream"))
  up_act0, act0 = _start_activity(down_model, up["snaps"], fresh, init, len(up["ids"]), probe_x,
                                  layers)
  down = yield train.call(down_model, dcfg, x_down, y_down, workdir=workdir, init_params=init,
                          probe_fn=probe, name="downstream")
  d_steps, d_acc = common.accuracy_curve(down_model, init, down,
                                         *common.head(part, dcfg.train_eval_examples),
                                         phase="downstream")
  d_act = _with_start(activity.curves_from_metrics(down.metrics, phase="downstream", seeds=ids_down),
                      act0, d_steps)
  return {"res": down, "blocks": blocks, "lr": down_lr, "steps": d_steps, "acc": d_acc,
          "act": d_act, "up_act0": up_act0,
          "test": common.split_accuracy(down_model, down.params, data.parts["test"])}


def _point(config, width: int, lr: float, ks, b: int, block, up: dict, dw: dict,
           scratch_act) -> dict:
  """The summary of block b (arm, upstream length L, K group g) against the scratch seeds."""
  arm, length, g = block
  dn, ns = config.downstream, int(config.train.num_seeds)
  down, d_steps, d_acc = dw["res"], dw["steps"], dw["acc"]
  block_rows = np.arange(ns)   # a seed's row inside its block of ns
  ok0 = ~down.diverged[:ns]
  sl, ug = slice(b * ns, (b + 1) * ns), slice(g * ns, (g + 1) * ns)
  ok = ~down.diverged[sl] & ~up["res"].diverged[ug]
  stats = lib.gain_stats(d_steps, d_acc[:ns], d_acc[sl], float(dn.threshold), seed=b,
                         diverged_scratch=~ok0, diverged_arm=~ok)
  at_l = up["steps"] == length
  point = {
      "width": width, "learning_rate": lr, "downstream_learning_rate": dw["lr"],
      "num_random_classes": ks[g], "upstream_steps": length, "arm": arm, "switch_step": length,
      **stats, "threshold": float(dn.threshold),
      "upstream_train_accuracy": up["acc"][ug][:, at_l][:, 0] if at_l.any() else None,
      "downstream_steps": d_steps, "final_train_accuracy": d_acc[sl][:, -1],
      "test_accuracy": dw["test"][sl], "test_accuracy_scratch": dw["test"][:ns],
      "diverged_upstream": int(up["res"].diverged[ug].sum()),
      "diverged": int(down.diverged[sl].sum()), "finished": ok, "scratch_finished": ok0,
  }
  if not stats.get("error"):
    mean, std = curves.seed_mean_std(d_acc[sl][ok])
    acts, drops = lib.point_activity(up["act"], dw["up_act0"], dw["act"], d_steps, length,
                                     g * ns + block_rows[ok], b * ns + block_rows[ok],
                                     block_rows[ok0],
                                     float(dn.drop_window))
    point.update(accuracy=mean, accuracy_std=std, accuracy_scratch=d_acc[:ns][ok0].mean(0),
                 accuracy_seeds=d_acc[sl][ok], accuracy_scratch_seeds=d_acc[:ns][ok0],
                 activity=acts, activity_drop=drops, scratch_activity=scratch_act)
  return point


@train.driven
def run_cell(config, workdir: str, width: int, lr: float, data) -> Generator:
  """Upstream (all K and L) + downstream (all arms) for one (width, lr) on `common.Data` data;
  returns its points."""
  sw, ns = config.sweep, int(config.train.num_seeds)
  ks = [int(k) for k in sw.num_random_classes]
  lengths = sorted(int(l) for l in sw.upstream_steps)
  up_model, down_model = _cell_models(config, width, ks, data.num_classes)
  layers = list(config.get("activity_layers") or []) or None
  probe_x = common.head(data.parts["downstream"], int(config.probe_examples))[0]
  probe = activity.make_probe_fn(probe_x, layers=layers)
  up = yield from _upstream(config, workdir, lr, data, up_model, probe, ks, lengths)
  dw = yield from _downstream(config, workdir, lr, data, down_model, probe, layers, up)
  ok0 = ~dw["res"].diverged[:ns]
  scratch_act = {layer: lib.seed_summary(dw["act"][layer], np.arange(ns)[ok0], dw["steps"])
                 for layer in dw["act"]} if ok0.any() else {}
  out = {}
  for b, (arm, length, g) in enumerate(dw["blocks"][1:], start=1):
    out[lib.point_id(width, lr, ks[g], length, arm)] = _point(
        config, width, lr, ks, b, (arm, length, g), up, dw, scratch_act)
  return out


@train.driven
def run(config, workdir: str) -> Generator:
  """Runs every (width, lr) cell (resuming finished ones from workdir), writes results.json + plots;
  returns the results dict (`run.steps`: the generator of its train calls, `train.driven`).

  results.json (seed-mean curves over the finished seeds; "steps" of `activity` are global:
  upstream 0..L, then L + the downstream steps, so the switch is at `switch_step` = L)::

    {"points": {point_id: {
        "width", "learning_rate", "downstream_learning_rate", "num_random_classes",
        "upstream_steps", "arm" ("pretrained" | "rescaled"), "switch_step", "threshold",
        "gain", "gain_censored", "censored", "gain_ci", "gain_seed_std", "gain_seeds" [S],
        "iterations" [S], "iterations_scratch" [S], "reached", "reached_scratch",
        "auc_difference",                                    # see gain_stats
        "upstream_train_accuracy" [S],                        # random-label fit at step L
        "downstream_steps" [T], "accuracy" [T], "accuracy_std" [T], "accuracy_scratch" [T],
        "accuracy_seeds" [S', T], "accuracy_scratch_seeds" [S'', T],  # the finished seeds
        "accuracy_behind_fraction", "accuracy_behind_fraction_2se", "accuracy_ahead_fraction",
        "final_train_accuracy" [S], "test_accuracy" [S], "test_accuracy_scratch" [S],
        "diverged_upstream", "diverged",                     # counts of frozen seeds
        "finished" [S], "scratch_finished" [S],              # the seeds in the statistics
        "error",                                             # only when none finished
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
  lib.validate(config)
  t0 = time.time()
  data = common.load_data(config, workdir)
  sw = config.sweep
  points = {}
  for width, lr in itertools.product(sw.widths, sw.learning_rates):
    cell = os.path.join(workdir, f"w={width}_lr={lr:g}")

    def compute(cell=cell, width=width, lr=lr):
      os.makedirs(cell, exist_ok=True)
      logging.info("specialization: cell width=%s lr=%g", width, lr)
      tc = time.time()
      done = yield from run_cell.steps(config, cell, int(width), float(lr), data)
      for p in done.values():
        p["cell_runtime_s"] = time.time() - tc
      return done
    points.update((yield from common.resume_steps(cell, "points", compute)))
  layers = models.sort_layers({l for p in points.values() for l in p.get("activity", {})})
  later_from = int(config.get("later_layers_from", -1))
  later_from = int(sw.width_from) if later_from < 0 else later_from
  out = {"points": points, "layers": layers, "later_layers": layers[later_from:] or layers,
         "threshold": float(config.downstream.threshold), "num_seeds": int(config.train.num_seeds),
         "highlight": lib.highlights(config, points)}
  out["figures"] = plots.plot_all(out, workdir, config)
  out["runtime_s"] = time.time() - t0      # this invocation (finished cells are read back)
  cells = {(p["width"], p["learning_rate"]): p.get("cell_runtime_s", 0.0) for p in points.values()}
  out["cells_runtime_s"] = float(sum(cells.values()))   # training + analysis of every cell
  out = common.jsonable(out)
  out["claims"] = claims.stamp(config, out)
  results.write_json(workdir, "results.json", out)
  return out
