"""The transfer experiment (Figs 1 and 5): upstream random labels, then every arm downstream.

    from rl_align.runners import transfer
    out = transfer.run(config, workdir)              # experiments/configs/fig5.py
    out["arms"]["covariance"]["train_accuracy"]      # [S][T] at out["arms"][...]["iterations"]
    out["speedup"]["covariance"]["0.6"]              # scratch iterations / arm iterations

The arms and the statistics are `rl_align.transfer`; this module loads the splits, runs the engine
phases, resumes and writes.  results.json (README "Transfer"): arms {arm: {iterations [T],
train_accuracy [S][T], test_accuracy [S], train_accuracy_mean/std [T] (finished seeds),
diverged [S], upstream_diverged [S], finished [S], num_diverged}}, upstream {train_accuracy [S],
diverged [S], num_diverged, ok, min_train_accuracy, num_steps, dead_fraction {layer: [S]} (ReLU
units never active on a probe batch at the end of upstream)}, sigma_w {seeds, num_seeds,
num_fitted, pooled [S]} (the upstream seeds the covariance arms' Sigma_w pools), speedup {arm:
{threshold: ratio}}, iterations_to_reach {arm: {threshold: mean}}, table {arm: {step: [mean,
std]}}, claims {figure, ..., verdicts} (`rl_align.claims.stamp`), transfer_functions {layer:
{lambda, f}}, data {sizes, name, placement}, runtime_s, figure.

config.data.placement: the data path every runner shares (`common.load_data`): "device" loads the
splits as arrays; "host" loads nothing: every phase streams its batches through
`rl_align.pipeline.HostFeed` (the same batches, labels and floats, so the same results), test
accuracy is streamed too; "auto" picks one by size and logs it.  Each phase has its own engine `name` (upstream, f_source, downstream_<arm>) and its own summary file under
workdir/phases/, so rerunning resumes and a finished run is only re-summarized.
"""
import copy
import os
import time
from typing import Any, Generator, Mapping

from absl import logging
import ml_collections
import numpy as np

from rl_align import activity
from rl_align import claims
from rl_align import curves
from rl_align import errors
from rl_align import init as init_lib
from rl_align import models
from rl_align import pipeline
from rl_align import results
from rl_align import seeds
from rl_align import train
from rl_align import transfer as lib
from rl_align.plots import transfer as plots
from rl_align.runners import common

PHASES = "phases"
PROBE_EXAMPLES = 256   # upstream examples the end-of-upstream ReLU activity is measured on
# The engine fields a phase (config.upstream, config.downstream, config.f_only.upstream) may set.
PHASE_FIELDS = ("num_steps", "num_epochs", "learning_rate", "batch_size", "eval_every_steps",
                "log_every_steps", "train_eval_examples", "num_seeds")


def load_data(config, workdir: str | None = None, placement: str | None = None) -> dict[str, Any]:
  """Disjoint upstream / downstream (/ test) splits of config.data, standardized with upstream
  statistics, where config.data.placement says (`common.load_data`; `placement` overrides; host:
  the statistics kept in workdir/phases/standardization.json).

  {placement, data (the `common.Data`), x_up, x_down, num_classes, indices, sizes}: x_up / x_down
  the whole upstream / downstream inputs (device) or their first config.layerwise.num_examples
  (host: what the arms and f measure on, read from the source)."""
  d = common.load_data(config, os.path.join(workdir, PHASES) if workdir else None, placement)
  if d.placement == "device":
    x_up, x_down = d.parts["upstream"].x, d.parts["downstream"].x
  else:
    n_ex = max(1, int(config.layerwise.num_examples))
    x_up, x_down = (common.head(d.parts[k], n_ex)[0] for k in ("upstream", "downstream"))
  return {"placement": d.placement, "data": d, "x_up": x_up, "x_down": x_down,
          "num_classes": d.num_classes, "indices": d.indices, "sizes": d.sizes}


def _model(config, num_classes: int):
  mcfg = ml_collections.ConfigDict(copy.deepcopy(config.model.to_dict()))
  mcfg.num_classes = int(num_classes)
  return models.build(mcfg)


def _phase_config(config, phase, seed: int):
  return common.engine_config(config, seed, **{k: phase.get(k) for k in PHASE_FIELDS})


@train.driven
def run_upstream(config, workdir: str, data, name: str = "upstream") -> Generator:
  """Trains the upstream seeds on K random labels (data: `load_data`'s); returns {init, params
  (flat, [S, ...]), train_accuracy [S], diverged [S], steps, curve [S, T], ...}; a finished phase
  is read back.
  `run_upstream.steps`: the generator of its train call (`train.driven`)."""
  folder = os.path.join(workdir, PHASES)

  def compute():
    t0 = time.time()
    uc = config.upstream
    k = int(uc.num_classes)
    cfg = _phase_config(config, uc, int(uc.seed))
    cfg.snapshot_steps = (0,)
    ids = seeds.seed_ids(cfg)
    labels = common.random_labels(data["data"], "upstream", int(uc.label_seed), ids, k)
    x, labels = common.train_inputs(data["data"], "upstream", cfg, labels)
    res = yield train.call(_model(config, k), cfg, x, labels, workdir=workdir,
                           snapshot_fn=common.flatten, name=name)
    steps, c = curves.from_metrics(res.metrics, ["train_accuracy"], seeds=ids, phase=name)
    acc = c["train_accuracy"]
    final = np.asarray(res.final_metrics.get("train_accuracy", acc[:, -1] if acc.size else np.nan))
    ok = curves.finished_seeds(res.diverged, len(ids))
    if not ok.any():
      raise errors.NumericalError(f"{name}: " + curves.all_diverged(len(ids), "upstream seeds"))
    fit = float(np.mean(final[ok]))
    out = {"train_accuracy": final, "steps": steps, "curve": acc, "num_steps": res.final_step,
           "num_classes": k, "diverged": res.diverged, "num_diverged": int((~ok).sum()),
           "runtime_s": time.time() - t0, "min_train_accuracy": float(uc.min_train_accuracy),
           "ok": bool(fit >= float(uc.min_train_accuracy))}
    if not out["ok"]:
      logging.warning(
          "%s: mean random-label train accuracy %.3f < upstream.min_train_accuracy=%.2f: the "
          "network has barely fitted its random labels, so little transfer is expected. Fix: "
          "train longer (upstream.num_steps), use fewer upstream examples or a wider model.",
          name, fit, float(uc.min_train_accuracy))
    probe = common.head(data["data"].parts["upstream"], PROBE_EXAMPLES)[0]
    out["dead_fraction"] = {layer: st["dead_fraction"] for layer, st in activity.measure(
        _model(config, k), res.params, probe).items()}
    arrays = {**{f"init/{k}": v for k, v in res.snapshots[0].items()},
              **{f"final/{k}": v for k, v in common.flatten(res.params).items()}}
    return out, arrays

  out, arrays = yield from common.resume_steps(folder, name, compute, with_arrays=True)
  out["init"] = {k[5:]: v for k, v in arrays.items() if k.startswith("init/")}
  out["params"] = {k[6:]: v for k, v in arrays.items() if k.startswith("final/")}
  return out


def _finished_params(up: Mapping[str, Any]) -> list:
  ok = curves.finished_seeds(up.get("diverged"), len(up["train_accuracy"]))
  return [p for p, f in zip(init_lib.unstack(common.unflatten(up["params"])), ok) if f]


def f_source(config, workdir: str, model_up, up: Mapping[str, Any], x_up) -> init_lib.TransferFunction:
  """f of the f_only arm: from the main upstream run, or from a separate upstream run on
  config.f_only.data (trained with the upstream settings, config.f_only overriding them; placed
  as config.data.placement says); the upstream seeds that finished only."""
  fo = config.f_only
  if fo.source == "upstream":
    params, x = _finished_params(up), x_up
  elif fo.source == "data":
    src = ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))
    # The f_only data streams like the main data (config.data.placement).
    src.data = ml_collections.ConfigDict(dict(fo.data.to_dict(),
                                              placement=config.data.get("placement", "device")))
    src.split = fo.split
    src.upstream.update({k: v for k, v in fo.get("upstream", {}).items()})
    src_data = load_data(src, os.path.join(workdir, "f_source"))
    x = src_data["x_up"]
    params = _finished_params(run_upstream(src, workdir, src_data, name="f_source"))
    model_up = _model(src, int(src.upstream.num_classes))
  else:
    raise errors.ConfigError(f"config.f_only.source={fo.source!r} is unknown. Fix: 'upstream' or "
                             "'data' (with config.f_only.data).")
  layer = models.layer_names(params[0])[0]
  n = int(config.layerwise.num_examples)
  return init_lib.measure_layer_transfer(model_up, params, x[:n], layer, num_bins=None)


def _downstream_input(config, data, cfg):
  """(x, labels) of the downstream phase (`common.train_inputs`): the real labels, or
  config.downstream's random ones."""
  d, dc = data["data"], config.downstream
  if dc.labels == "real":
    labels = common.real_labels(d, "downstream")
  elif dc.labels == "random":
    labels = common.random_labels(d, "downstream", int(dc.label_seed), seeds.seed_ids(cfg),
                                  int(dc.num_random_classes))
  else:
    raise errors.ConfigError(f"config.downstream.labels={dc.labels!r} is unknown. "
                             "Fix: 'real' or 'random'.")
  return common.train_inputs(d, "downstream", cfg, labels)


@train.driven
def run_arm(config, workdir: str, arm: str, ctx: lib.ArmContext, data, up) -> Generator:
  """One downstream arm: num_seeds seeds through the engine; returns its results entry."""
  name = f"downstream_{arm}"

  def compute():
    t0 = time.time()
    dc = config.downstream
    cfg = _phase_config(config, dc, int(dc.seed))
    x, y = _downstream_input(config, data, cfg)
    init = init_lib.stack(ctx.build(arm))
    res = yield train.call(ctx.model, cfg, x, y, workdir=workdir, init_params=init, name=name)
    if isinstance(x, pipeline.HostFeed):
      xe, ye = x.head(int(cfg.train_eval_examples))
    else:
      m = min(len(x), int(cfg.train_eval_examples))
      xe, ye = x[:m], np.asarray(y)[..., :m]
    test = common.split_accuracy(ctx.model, res.params, data["data"].parts["test"], 1024)
    steps, acc = common.accuracy_curve(ctx.model, init, res, xe, ye, phase=name, batch_size=1024)
    carried = up is not None and lib.carries_seeds(arm)
    out = lib.arm_summary(acc, test, res.diverged, up["diverged"] if carried else None)
    return {"iterations": steps, **out, "runtime_s": time.time() - t0}

  return (yield from common.resume_steps(os.path.join(workdir, PHASES), name, compute))


@train.driven
def run(config, workdir: str) -> Generator:
  """Upstream, every arm downstream, summary; writes results.json, arrays.npz and the figure.
  `run.steps`: the generator of its train calls (`train.driven`).  The f_only arm's separate
  upstream run (config.f_only.source="data") is made inside the arm's init and runs alone."""
  t0 = time.time()
  arms_list = lib.check_arms(config.arms)
  data = load_data(config, workdir)
  model_up = _model(config, int(config.upstream.num_classes))
  dn = data["num_classes"] if config.downstream.labels == "real" else int(
      config.downstream.num_random_classes)
  model_down = _model(config, dn)
  needs_upstream = any(lib.uses_upstream(a, config) for a in arms_list)
  up = (yield from run_upstream.steps(config, workdir, data)) if needs_upstream else None
  pre = common.unflatten(up["params"]) if up else {}
  pre_init = common.unflatten(up["init"]) if up else {}
  ctx = lib.ArmContext(config, model_down, model_up, pre, pre_init, data["x_up"], data["x_down"],
                       upstream_diverged=None if up is None else up["diverged"],
                       upstream_fit=None if up is None else up["train_accuracy"],
                       upstream_classes=int(config.upstream.num_classes),
                       f_source=lambda: f_source(config, workdir, model_up, up, data["x_up"]))
  arms = {}
  for arm in arms_list:
    logging.info("transfer: arm %s", arm)
    arms[arm] = yield from run_arm.steps(config, workdir, arm, ctx, data, up)
  thresholds = [float(t) for t in config.speedup_thresholds]
  out = {"arms": arms,
         "upstream": None if up is None else {
             k: up.get(k) for k in ("train_accuracy", "diverged", "num_diverged", "ok",
                                "min_train_accuracy", "num_steps", "num_classes", "steps", "curve",
                                "dead_fraction")},
         "sigma_w": ctx.sigma_w_record() if up else None,
         **lib.summarize(arms, thresholds, list(config.report_steps)),
         "thresholds": thresholds}
  tf = {name: {"lambda": f.knots, "f": f.values, "rest": f.rest}
        for name, f in ctx.transfer_functions.items()}
  folder = os.path.join(workdir, PHASES)
  if tf:   # measured in this invocation; else (every arm resumed) read back
    results.write_json(folder, "transfer_functions.json", tf)
  out["transfer_functions"] = (common.jsonable(tf) if tf else
                               results.read_json(folder, "transfer_functions.json") or {})
  out["data"] = {"sizes": data["sizes"], "name": config.data.name, "placement": data["placement"]}
  phases = list(arms.values()) + ([up] if up else [])
  out["runtime_s"] = float(sum(p.get("runtime_s", 0.0) for p in phases))
  fig = plots.plot_transfer(out, os.path.join(workdir, config.get("figure_name", "transfer.png")),
                            title=config.get("title", ""),
                            reference=config.get("paper_reference", None))
  out["figure"] = os.path.basename(fig)
  out = common.jsonable(out)
  out["claims"] = claims.stamp(config, out)
  results.write_json(workdir, "results.json", out)
  logging.info("transfer: done in %.0f s (this invocation)", time.time() - t0)
  return out
