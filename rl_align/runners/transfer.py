"""The transfer experiment (Figs 1 and 5): upstream random labels, then every arm downstream.

    from rl_align.runners import transfer
    out = transfer.run(config, workdir)              # experiments/configs/fig5.py
    out["arms"]["covariance"]["train_accuracy"]      # [S][T] at out["arms"][...]["iterations"]
    out["speedup"]["covariance"]["0.6"]              # scratch iterations / arm iterations

The arms and the statistics are `rl_align.transfer`; this module loads the splits, runs the engine
phases, resumes and writes.  The downstream arms are one list of calls, which the engine runs as
one program where they are compatible (same model and phase config: every arm here), each arm
still resumable and read back on its own.  results.json (README "Transfer"): arms {arm: {iterations [T],
train_accuracy [S][T], test_accuracy [S], train_accuracy_mean/std [T] (finished seeds),
diverged [S], upstream_diverged [S], finished [S], num_diverged}}, upstream {train_accuracy [S],
diverged [S], num_diverged, ok, min_train_accuracy, num_steps, dead_fraction {layer: [S]} (ReLU
units never active on a probe batch at the end of upstream)}, sigma_w {seeds, num_seeds,
num_fitted, pooled [S]} (the upstream seeds the covariance arms' Sigma_w pools), speedup {arm:
{threshold: ratio}}, iterations_to_reach {arm: {threshold: mean}}, table {arm: {step: [mean,
std]}}, claims {figure, ..., verdicts} (`rl_align.claims.stamp`), transfer_functions {layer:
{lambda, f}}, data {sizes, name, placement}, runtime_s, figure.

config.data.placement: the one input type (`rl_align.inputs`): "device" loads the splits as arrays;
"host" loads nothing: every phase streams its batches from the host (the same batches, labels and
floats, so the same results), test accuracy is streamed too; "auto" picks one by size and logs it.
Each phase has its own engine `name` (upstream, f_source, downstream_<arm>) and its own summary
file under workdir/phases/, so rerunning resumes and a finished run is only re-summarized.
"""

import copy
import dataclasses
import os
import time
from typing import Generator

from absl import logging
import ml_collections
import numpy as np

from rl_align import activity
from rl_align import claims
from rl_align import curves
from rl_align import errors
from rl_align import init as init_lib
from rl_align import inputs
from rl_align import models
from rl_align import results
from rl_align import seeds
from rl_align import train
from rl_align import transfer as lib
from rl_align.engine import config as engine_config
from rl_align.plots import transfer as plots
from rl_align.runners import evaluation
from rl_align.runners import phases

PHASES = "phases"
PROBE_EXAMPLES = 256  # upstream examples the end-of-upstream ReLU activity is measured on
# The engine fields a phase (config.upstream, config.downstream, config.f_only.upstream) may set.
PHASE_FIELDS = (
  "num_steps",
  "num_epochs",
  "learning_rate",
  "batch_size",
  "eval_every_steps",
  "log_every_steps",
  "train_eval_examples",
  "num_seeds",
)


@dataclasses.dataclass
class Splits:
  """The transfer experiment's data (`load_data`): the splits (`inputs.Data`: "upstream",
  "downstream", "test") and the inputs the arms and f measure on (the first
  config.layerwise.num_examples of the upstream / downstream split)."""

  data: inputs.Data
  x_up: np.ndarray
  x_down: np.ndarray


def load_data(config, workdir: str | None = None, placement: str | None = None) -> Splits:
  """Disjoint upstream / downstream (/ test) splits of config.data, standardized with upstream
  statistics, where config.data.placement says (`inputs.load`; `placement` overrides; host: the
  statistics kept in workdir/phases/standardization.json)."""
  d = inputs.load(config, os.path.join(workdir, PHASES) if workdir else None, placement)
  n_ex = max(1, int(config.layerwise.num_examples))
  return Splits(d, d.parts["upstream"].head(n_ex)[0], d.parts["downstream"].head(n_ex)[0])


def validate(config) -> None:
  """What `run` checks before any data is read (the binaries call it before writing anything):
  the arms, the phases' engine fields (each named by its own config path), the downstream
  labels, f_only's source."""
  lib.check_arms(config.arms)
  engine_config.validate_fields(config.train, "train")
  for name in ("upstream", "downstream"):
    phase = config[name]
    for field in PHASE_FIELDS:
      if field in phase:
        cfg = ml_collections.ConfigDict(copy.deepcopy(config.train.to_dict()))
        cfg[field] = phase[field]
        engine_config.validate_fields(cfg, name)
  if config.downstream.labels not in ("real", "random"):
    raise errors.ConfigError(
      f"config.downstream.labels={config.downstream.labels!r} is unknown. "
      "Fix: --config.downstream.labels=real (or random)."
    )
  if "f_only" in config.arms and config.f_only.source not in ("upstream", "data"):
    raise errors.ConfigError(
      f"config.f_only.source={config.f_only.source!r} is unknown. Fix: "
      "--config.f_only.source=upstream (or data, with config.f_only.data)."
    )


def _model(config, num_classes: int):
  mcfg = ml_collections.ConfigDict(copy.deepcopy(config.model.to_dict()))
  mcfg.num_classes = int(num_classes)
  return models.build(mcfg)


def _phase_config(config, phase, seed: int):
  return phases.engine_config(config, seed, **{k: phase.get(k) for k in PHASE_FIELDS})


@dataclasses.dataclass
class Upstream:
  """A finished upstream phase (`run_upstream`): its summary (results.json `upstream`) and the
  flat params [S, ...] at init and at the end."""

  summary: dict
  init: dict
  params: dict

  @property
  def diverged(self):
    return self.summary["diverged"]

  @property
  def train_accuracy(self):
    return self.summary["train_accuracy"]

  def finished_params(self) -> list:
    """One params tree per upstream seed that finished."""
    ok = curves.finished_seeds(self.diverged, len(self.train_accuracy))
    return [p for p, f in zip(init_lib.unstack(phases.unflatten(self.params)), ok) if f]


@train.driven
def run_upstream(config, workdir: str, splits: Splits, name: str = "upstream") -> Generator:
  """Trains the upstream seeds on K random labels; returns the `Upstream` (summary: train_accuracy
  [S], diverged [S], steps, curve [S, T], dead_fraction {layer: [S]}, ...); a finished phase is
  read back.  `run_upstream.steps`: the generator of its train call (`train.driven`)."""
  folder = os.path.join(workdir, PHASES)

  def compute():
    t0 = time.time()
    uc = config.upstream
    k = int(uc.num_classes)
    cfg = _phase_config(config, uc, int(uc.seed))
    cfg.snapshot_steps = (0,)
    ids = seeds.seed_ids(cfg)
    x, labels = splits.data.engine_input(
      "upstream", cfg, inputs.RandomLabels.of(int(uc.label_seed), ids, k)
    )
    res = yield train.call(
      _model(config, k), cfg, x, labels, workdir=workdir, snapshot_fn=phases.flatten, name=name
    )
    steps, c = curves.from_metrics(res.metrics, ["train_accuracy"], seeds=ids, phase=name)
    acc = c["train_accuracy"]
    final = np.asarray(res.final_metrics.get("train_accuracy", acc[:, -1] if acc.size else np.nan))
    ok = curves.finished_seeds(res.diverged, len(ids))
    if not ok.any():
      raise errors.NumericalError(f"{name}: " + curves.all_diverged(len(ids), "upstream seeds"))
    fit = float(np.mean(final[ok]))
    out = {
      "train_accuracy": final,
      "steps": steps,
      "curve": acc,
      "num_steps": res.final_step,
      "num_classes": k,
      "diverged": res.diverged,
      "num_diverged": int((~ok).sum()),
      "runtime_s": time.time() - t0,
      "min_train_accuracy": float(uc.min_train_accuracy),
      "ok": bool(fit >= float(uc.min_train_accuracy)),
    }
    if not out["ok"]:
      logging.warning(
        "%s: mean random-label train accuracy %.3f < upstream.min_train_accuracy=%.2f: the "
        "network has barely fitted its random labels, so little transfer is expected. Fix: "
        "train longer (upstream.num_steps), use fewer upstream examples or a wider model.",
        name,
        fit,
        float(uc.min_train_accuracy),
      )
    probe = splits.data.parts["upstream"].head(PROBE_EXAMPLES)[0]
    out["dead_fraction"] = {
      layer: st["dead_fraction"]
      for layer, st in activity.measure(_model(config, k), res.params, probe).items()
    }
    arrays = {
      **{f"init/{k}": v for k, v in res.snapshots[0].items()},
      **{f"final/{k}": v for k, v in phases.flatten(res.params).items()},
    }
    return out, arrays

  out, arrays = yield from phases.resume_steps(folder, name, compute, with_arrays=True)
  return Upstream(
    out,
    {k[5:]: v for k, v in arrays.items() if k.startswith("init/")},
    {k[6:]: v for k, v in arrays.items() if k.startswith("final/")},
  )


def f_source(config, workdir: str, model_up, up: Upstream | None, splits: Splits) -> Generator:
  """f of the f_only arm (a generator of its train call, if any): from the main upstream run, or
  from a separate upstream run on config.f_only.data (trained with the upstream settings,
  config.f_only overriding them; placed as config.data.placement says); the upstream seeds that
  finished only."""
  fo = config.f_only
  if fo.source == "upstream":
    params, x = up.finished_params(), splits.x_up
  else:  # "data" (`validate`)
    src = ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))
    # The f_only data streams like the main data (config.data.placement).
    src.data = ml_collections.ConfigDict(
      dict(fo.data.to_dict(), placement=config.data.get("placement", "device"))
    )
    src.split = fo.split
    src.upstream.update({k: v for k, v in fo.get("upstream", {}).items()})
    src_splits = load_data(src, os.path.join(workdir, "f_source"))
    x = src_splits.x_up
    params = (
      yield from run_upstream.steps(src, workdir, src_splits, name="f_source")
    ).finished_params()
    model_up = _model(src, int(src.upstream.num_classes))
  layer = models.layer_names(params[0])[0]
  n = int(config.layerwise.num_examples)
  return init_lib.measure_layer_transfer(model_up, params, x[:n], layer, num_bins=None)


def _downstream_labels(config, cfg):
  """The downstream labels: the real ones, or config.downstream's random ones."""
  dc = config.downstream
  if dc.labels == "real":
    return inputs.REAL
  return inputs.RandomLabels.of(int(dc.label_seed), seeds.seed_ids(cfg), int(dc.num_random_classes))


def run_arms(
  config, workdir: str, arms: list[str], ctx: lib.ArmContext, splits: Splits, up: Upstream | None
) -> Generator:
  """Every arm downstream: num_seeds seeds each from the arm's init, the unfinished arms as one
  list of calls (one program where compatible); each arm's results entry is computed once and
  kept in workdir/phases/downstream_<arm>.json.  Returns {arm: entry}."""
  folder = os.path.join(workdir, PHASES)
  out = {arm: results.read_json(folder, f"downstream_{arm}.json") for arm in arms}
  todo = [arm for arm in arms if out[arm] is None]
  if not todo:
    return out
  dc = config.downstream
  cfg = _phase_config(config, dc, int(dc.seed))
  labels = _downstream_labels(config, cfg)
  x, y = splits.data.engine_input("downstream", cfg, labels)
  inits = {}
  for arm in todo:
    logging.info("transfer: arm %s", arm)
    inits[arm] = init_lib.stack(ctx.build(arm))
  t0 = time.time()
  got = yield [
    train.call(
      ctx.model, cfg, x, y, workdir=workdir, init_params=inits[arm], name=f"downstream_{arm}"
    )
    for arm in todo
  ]
  part = splits.data.parts["downstream"]
  xe = part.head(int(cfg.train_eval_examples))[0]
  ye = inputs.head_labels(part, labels, int(cfg.train_eval_examples))
  share = (time.time() - t0) / len(todo)
  for arm, res in zip(todo, got):
    test = evaluation.split_accuracy(ctx.model, res.params, splits.data.parts["test"], 1024)
    steps, acc = evaluation.accuracy_curve(
      ctx.model, inits[arm], res, xe, ye, phase=f"downstream_{arm}", batch_size=1024
    )
    carried = up is not None and lib.carries_seeds(arm)
    entry = lib.arm_summary(acc, test, res.diverged, up.diverged if carried else None)
    entry = phases.jsonable({"iterations": steps, **entry, "runtime_s": share})
    results.write_json(folder, f"downstream_{arm}.json", entry)
    out[arm] = entry
  return out


@train.driven
def run(config, workdir: str) -> Generator:
  """Upstream, f_only's source (if any), every arm downstream, summary; writes results.json,
  arrays.npz and the figure.  `run.steps`: the generator of its train calls (`train.driven`)."""
  t0 = time.time()
  arms_list = lib.check_arms(config.arms)
  splits = load_data(config, workdir)
  d = splits.data
  model_up = _model(config, int(config.upstream.num_classes))
  dn = (
    d.num_classes
    if config.downstream.labels == "real"
    else int(config.downstream.num_random_classes)
  )
  model_down = _model(config, dn)
  needs_upstream = any(lib.uses_upstream(a, config) for a in arms_list)
  up = (yield from run_upstream.steps(config, workdir, splits)) if needs_upstream else None
  f = (
    (yield from f_source(config, workdir, model_up, up, splits)) if "f_only" in arms_list else None
  )
  ctx = lib.ArmContext(
    config,
    model_down,
    model_up,
    phases.unflatten(up.params) if up else {},
    phases.unflatten(up.init) if up else {},
    splits.x_up,
    splits.x_down,
    upstream_diverged=None if up is None else up.diverged,
    upstream_fit=None if up is None else up.train_accuracy,
    upstream_classes=int(config.upstream.num_classes),
    f_source=lambda: f,
  )
  arms = yield from run_arms(config, workdir, arms_list, ctx, splits, up)
  thresholds = [float(t) for t in config.speedup_thresholds]
  out = {
    "arms": arms,
    "upstream": None
    if up is None
    else {
      k: up.summary.get(k)
      for k in (
        "train_accuracy",
        "diverged",
        "num_diverged",
        "ok",
        "min_train_accuracy",
        "num_steps",
        "num_classes",
        "steps",
        "curve",
        "dead_fraction",
      )
    },
    "sigma_w": ctx.sigma_w_record() if up else None,
    **lib.summarize(arms, thresholds, list(config.report_steps)),
    "thresholds": thresholds,
  }
  tf = {
    name: {"lambda": fn.knots, "f": fn.values, "rest": fn.rest}
    for name, fn in ctx.transfer_functions.items()
  }
  folder = os.path.join(workdir, PHASES)
  if tf:  # measured in this invocation; else (every arm resumed) read back
    results.write_json(folder, "transfer_functions.json", tf)
  out["transfer_functions"] = (
    phases.jsonable(tf) if tf else results.read_json(folder, "transfer_functions.json") or {}
  )
  out["data"] = {"sizes": d.sizes, "name": config.data.name, "placement": d.placement}
  done = list(arms.values()) + ([up.summary] if up else [])
  out["runtime_s"] = float(sum(p.get("runtime_s", 0.0) for p in done))
  fig = plots.plot_transfer(
    out,
    os.path.join(workdir, config.get("figure_name", "transfer.png")),
    title=config.get("title", ""),
    reference=config.get("paper_reference", None),
  )
  out["figure"] = os.path.basename(fig)
  out = phases.jsonable(out)
  out["claims"] = claims.stamp(config, out)
  results.write_json(workdir, "results.json", out)
  logging.info("transfer: done in %.0f s (this invocation)", time.time() - t0)
  return out
