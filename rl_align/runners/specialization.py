"""The specialization sweep (the paper's section 3): per (width, learning rate) cell one upstream
and one downstream engine run, every point's gain and activity, the figures.

    from rl_align.runners import specialization
    out = specialization.run(config, workdir)     # experiments/configs/specialization.py
    out["points"]["w=32,lr=0.02,K=50,L=4000,arm=pretrained"]["gain"]

The pieces and statistics are `rl_align.specialization`; finished cells are read back from
workdir/w=<width>_lr=<lr>/points.json, an unfinished one resumes from its engine checkpoints.
"""

import dataclasses
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
from rl_align import inputs
from rl_align import models
from rl_align import results
from rl_align import seeds
from rl_align import specialization as lib
from rl_align import train
from rl_align.plots import specialization as plots
from rl_align.runners import evaluation
from rl_align.runners import phases

_FRESH = 17  # fold_in tag of the fresh (scratch / new head) init keys of the downstream seeds


def validate(config) -> None:
  """The sweep config's checks that need no data (`specialization.validate`)."""
  lib.validate(config)


def _stack_init(model, example_shape, keys):
  init = jax.jit(
    jax.vmap(lambda k: model.init(k, jnp.zeros((1,) + tuple(example_shape)))["params"])
  )
  return jax.tree.map(np.asarray, init(keys))


def _phase_config(
  config, lr, num_steps, eval_every, num_seeds, seed, train_eval_examples, seed_offset: int
):
  cfg = phases.engine_config(
    config,
    seed,
    learning_rate=float(lr),
    num_steps=int(num_steps),
    eval_every_steps=int(eval_every),
    log_every_steps=int(eval_every),
    num_seeds=int(num_seeds),
    train_eval_examples=int(train_eval_examples),
  )
  cfg.seed_offset = int(config.train.seed_offset) + int(seed_offset)
  return cfg


def _with_start(curves_, start, steps):
  """Downstream curves {layer: {stat: [S, T]}} with the step-0 values `start` prepended."""
  return {
    layer: {
      "steps": steps,
      **{k: np.concatenate([start[layer][k][:, None], c[k]], 1) for k in activity.STATS},
    }
    for layer, c in curves_.items()
  }


def _cell_models(config, width: int, ks, n_real: int):
  """(upstream model with a head of max K, downstream model with n_real classes) at `width`."""
  sw = config.sweep
  mcfg = lib.with_width(config.model, sw.width_field, int(sw.width_from), width)
  mcfg.num_classes = max(ks)
  up_model = models.build(mcfg)
  mcfg.num_classes = n_real
  return up_model, models.build(mcfg)


@dataclasses.dataclass
class Group:
  """One K group of the upstream run: its seeds' result, train accuracy curve and activity."""

  res: train.TrainResult
  steps: np.ndarray
  acc: np.ndarray  # [S, T]
  snaps: dict  # step -> stacked params
  act: dict  # activity curves {layer: {"steps", stat: [S, T]}}


@dataclasses.dataclass
class Block:
  """One block of the downstream run (scratch, or an arm at one upstream length and K group)."""

  res: train.TrainResult
  init: dict
  steps: np.ndarray
  acc: np.ndarray  # [S, T + 1] train accuracy from step 0
  act: dict  # activity curves from step 0
  test: np.ndarray  # [S]


def _upstream(
  config, workdir: str, lr: float, data: inputs.Data, up_model, probe, ks, lengths
) -> Generator:
  """One call per K group (num_seeds seeds, labels in [0, K), consecutive seed ids), yielded as a
  list (one program); snapshots at 0 and every L.  Returns the groups."""
  ns, root = int(config.train.num_seeds), int(config.train.seed)
  n = data.sizes["upstream"]
  calls = []
  for g, k in enumerate(ks):
    ucfg = _phase_config(
      config,
      lr,
      lengths[-1],
      config.upstream.eval_every_steps,
      ns,
      root,
      min(n, int(config.train.train_eval_examples)),
      g * ns,
    )
    ucfg.snapshot_steps = tuple([0] + lengths)
    x, labels = data.engine_input(
      "upstream", ucfg, inputs.RandomLabels.of(root, seeds.seed_ids(ucfg), k)
    )
    calls.append(
      train.call(
        up_model,
        ucfg,
        x,
        labels,
        workdir=workdir,
        snapshot_fn=phases.flatten,
        probe_fn=probe,
        name="upstream",
      )
    )
  got = yield calls
  out = []
  for c, res in zip(calls, got):
    ids = seeds.seed_ids(c.cfg)
    steps, cv = curves.from_metrics(res.metrics, ["train_accuracy"], seeds=ids)
    out.append(
      Group(
        res,
        steps,
        cv["train_accuracy"],
        {step: phases.unflatten(s) for step, s in res.snapshots.items()},
        activity.curves_from_metrics(res.metrics, phase="upstream", seeds=ids),
      )
    )
  return out


def _downstream(
  config, workdir: str, lr: float, data: inputs.Data, down_model, probe, layers, groups
) -> Generator:
  """Every arm block and the scratch block as one list of calls (one program), each from its
  downstream init.  Returns (blocks, each group's activity at its upstream start)."""
  dn, ns, root = config.downstream, int(config.train.num_seeds), int(config.train.seed)
  part = data.parts["downstream"]
  down_lr = float(dn.learning_rate) or lr
  probe_x = part.head(int(config.probe_examples))[0]
  cfgs, inits = [], []
  for b, block in enumerate(lib.downstream_blocks(config)):
    dcfg = _phase_config(
      config,
      down_lr,
      dn.num_steps,
      dn.eval_every_steps,
      ns,
      root + 1,
      min(len(part), int(dn.train_eval_examples)),
      b * ns,
    )
    keys = jnp.stack([seeds.seed_key(root + 1, i, _FRESH) for i in seeds.seed_ids(dcfg)])
    fresh = _stack_init(down_model, part.example_shape, keys)
    _, length, g = block
    snaps = groups[g].snaps if g is not None else {}
    inits.append(lib.block_init(block, snaps.get(length), snaps.get(0), fresh))
    cfgs.append(dcfg)
  got = yield [
    train.call(
      down_model,
      cfg,
      *data.engine_input("downstream", cfg, inputs.REAL),
      workdir=workdir,
      init_params=init,
      probe_fn=probe,
      name="downstream",
    )
    for cfg, init in zip(cfgs, inits)
  ]
  xe, ye = part.head(int(cfgs[0].train_eval_examples))
  # Activity at the upstream start (its head swapped for a downstream-sized one, which leaves
  # every hidden activation unchanged) and at every block's start.
  head = lib.head_name(inits[0])
  up0 = [
    activity.measure(
      down_model, init_lib.replace_layer(gr.snaps[0], inits[0], head), probe_x, layers=layers
    )
    for gr in groups
  ]
  blocks = []
  for cfg, init, res in zip(cfgs, inits, got):
    steps, acc = evaluation.accuracy_curve(down_model, init, res, xe, ye, phase="downstream")
    start = activity.measure(down_model, init, probe_x, layers=layers)
    act = _with_start(
      activity.curves_from_metrics(res.metrics, phase="downstream", seeds=seeds.seed_ids(cfg)),
      start,
      steps,
    )
    blocks.append(
      Block(
        res,
        init,
        steps,
        acc,
        act,
        evaluation.split_accuracy(down_model, res.params, data.parts["test"]),
      )
    )
  return blocks, up0, down_lr


def _point(
  config,
  width: int,
  lr: float,
  ks,
  block,
  group: Group,
  up0,
  arm_b: Block,
  scratch: Block,
  down_lr: float,
  scratch_act,
) -> dict:
  """The summary of one arm block (arm, upstream length L, K group) against the scratch block."""
  arm, length, g = block
  dn = config.downstream
  ok0 = ~scratch.res.diverged
  ok = ~arm_b.res.diverged & ~group.res.diverged
  stats = lib.gain_stats(
    arm_b.steps,
    scratch.acc,
    arm_b.acc,
    float(dn.threshold),
    seed=lib.downstream_blocks(config).index(block),
    diverged_scratch=~ok0,
    diverged_arm=~ok,
  )
  at_l = group.steps == length
  point = {
    "width": width,
    "learning_rate": lr,
    "downstream_learning_rate": down_lr,
    "num_random_classes": ks[g],
    "upstream_steps": length,
    "arm": arm,
    "switch_step": length,
    **stats,
    "threshold": float(dn.threshold),
    "upstream_train_accuracy": group.acc[:, at_l][:, 0] if at_l.any() else None,
    "downstream_steps": arm_b.steps,
    "final_train_accuracy": arm_b.acc[:, -1],
    "test_accuracy": arm_b.test,
    "test_accuracy_scratch": scratch.test,
    "diverged_upstream": int(group.res.diverged.sum()),
    "diverged": int(arm_b.res.diverged.sum()),
    "finished": ok,
    "scratch_finished": ok0,
  }
  if not stats.get("error"):
    mean, std = curves.seed_mean_std(arm_b.acc[ok])
    acts, drops = lib.point_activity(
      lib.rows(group.act, ok),
      lib.rows(up0, ok),
      lib.rows(arm_b.act, ok),
      lib.rows(scratch.act, ok0),
      arm_b.steps,
      length,
      float(dn.drop_window),
    )
    point.update(
      accuracy=mean,
      accuracy_std=std,
      accuracy_scratch=scratch.acc[ok0].mean(0),
      accuracy_seeds=arm_b.acc[ok],
      accuracy_scratch_seeds=scratch.acc[ok0],
      activity=acts,
      activity_drop=drops,
      scratch_activity=scratch_act,
    )
  return point


@train.driven
def run_cell(config, workdir: str, width: int, lr: float, data: inputs.Data) -> Generator:
  """Upstream (all K and L) + downstream (all arms) for one (width, lr); returns its points."""
  sw = config.sweep
  ks = [int(k) for k in sw.num_random_classes]
  lengths = sorted(int(l) for l in sw.upstream_steps)
  up_model, down_model = _cell_models(config, width, ks, data.num_classes)
  layers = list(config.get("activity_layers") or []) or None
  probe_x = data.parts["downstream"].head(int(config.probe_examples))[0]
  probe = activity.make_probe_fn(probe_x, layers=layers)
  groups = yield from _upstream(config, workdir, lr, data, up_model, probe, ks, lengths)
  blocks, up0, down_lr = yield from _downstream(
    config, workdir, lr, data, down_model, probe, layers, groups
  )
  scratch = blocks[0]
  ok0 = ~scratch.res.diverged
  scratch_act = (
    {
      layer: lib.seed_summary(scratch.act[layer], np.flatnonzero(ok0), scratch.steps)
      for layer in scratch.act
    }
    if ok0.any()
    else {}
  )
  out = {}
  for block, arm_b in zip(lib.downstream_blocks(config)[1:], blocks[1:]):
    arm, length, g = block
    out[lib.point_id(width, lr, ks[g], length, arm)] = _point(
      config, width, lr, ks, block, groups[g], up0[g], arm_b, scratch, down_lr, scratch_act
    )
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
  data = inputs.load(config, workdir)
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

    points.update((yield from phases.resume_steps(cell, "points", compute)))
  layers = models.sort_layers({l for p in points.values() for l in p.get("activity", {})})
  later_from = int(config.get("later_layers_from", -1))
  later_from = int(sw.width_from) if later_from < 0 else later_from
  out = {
    "points": points,
    "layers": layers,
    "later_layers": layers[later_from:] or layers,
    "threshold": float(config.downstream.threshold),
    "num_seeds": int(config.train.num_seeds),
    "highlight": lib.highlights(config, points),
  }
  out["figures"] = plots.plot_all(out, workdir, config)
  out["runtime_s"] = time.time() - t0  # this invocation (finished cells are read back)
  cells = {(p["width"], p["learning_rate"]): p.get("cell_runtime_s", 0.0) for p in points.values()}
  out["cells_runtime_s"] = float(sum(cells.values()))  # training + analysis of every cell
  out = phases.jsonable(out)
  out["claims"] = claims.stamp(config, out)
  results.write_json(workdir, "results.json", out)
  return out
