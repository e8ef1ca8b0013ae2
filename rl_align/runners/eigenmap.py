"""The eigenvalue-map experiments (Figs 2, 4, 20): train the seeds, analyse, write, plot.

    from rl_align.runners import eigenmap
    out = eigenmap.run(panel_cfg, workdir)            # one panel: results.json, arrays.npz, plots
    summary = eigenmap.run_panels(config, workdir)    # every panel of config.panels + joint figure
    eigenmap.run_misalignment(config, workdir)        # Fig 2: panels + misalignment over training

The analysis is `rl_align.eigenmap` (summarize, early_time_fit, shape_checks).
"""

import copy
import os
import time
from typing import Any, Generator

import ml_collections
import numpy as np

from rl_align import alignment
from rl_align import claims
from rl_align import covariance
from rl_align import data as data_lib
from rl_align import eigenmap as lib
from rl_align import errors
from rl_align import inputs
from rl_align import models
from rl_align import results
from rl_align import tensorboard
from rl_align import train
from rl_align import workdir as workdir_lib
from rl_align.engine import config as engine_config
from rl_align.plots import eigenmap as plots
from rl_align.runners import phases


# Images per batch of the input covariance (`covariance.patch_covariance`'s default) and vectors
# per batch (`covariance.data_covariance`'s): streamed either way, so both placements give its bits.
PATCH_BATCH, VECTOR_BATCH = 512, 8192


def data_eigenbasis(config, part: inputs.Split) -> tuple[np.ndarray, np.ndarray]:
  """(lambda desc, V) of the input covariance of a split: of its examples themselves (vectors) or
  of their k x k patches, streamed in batches."""
  if len(part.example_shape) == 3:
    k = int(config.analysis.patch_size)
    _, cov = covariance.patch_covariance(part.batches(PATCH_BATCH), k, PATCH_BATCH)
  elif config.data.name == "gaussian" and config.analysis.get("population_covariance", True):
    kw = inputs.source_kwargs(config.data)
    cov = data_lib.gaussian_covariance(
      stds=kw.get("stds"),
      variances=kw.get("variances"),
      rotate=kw.get("rotate", False),
      seed=kw.get("seed", 0),
    )
  else:
    _, cov = covariance.data_covariance(part.batches(VECTOR_BATCH), VECTOR_BATCH)
  return alignment.eigh_desc(cov)


def analyse(config, res: train.TrainResult, lam, V) -> dict[str, Any]:
  """The final weights' and every snapshot's summary, the early-time fits (finished seeds)."""
  a = config.analysis
  key = int(a.basis_seed)
  summarize = lambda kernels, **kw: lib.summarize(
    kernels, lam, V, key=key, centered=a.centered, reduce=a.reduce, diverged=res.diverged, **kw
  )
  out = summarize(models.first_layer_kernel(res.params))
  out["train_accuracy"] = res.final_metrics.get("train_accuracy")
  out["step"], out["epoch"] = res.final_step, res.final_step / res.steps_per_epoch
  snaps, fits = [], []
  ok = lib.finished(out)
  for step, snap in res.snapshots.items():
    s = summarize(snap["first_kernel"], floor_trials=2)
    s.update(step=step, epoch=step / res.steps_per_epoch)
    snaps.append({k: v for k, v in s.items() if k not in ("eigenvalues", "sigma")})
    if step > 0 and ok.any():
      fits.append(
        {"step": step, "epoch": step / res.steps_per_epoch, **lib.early_time_fit(s["f"][ok], lam)}
      )
  out["snapshots"] = snaps
  out["early_time"] = fits
  return out


def write_f_tensorboard(workdir: str, res: train.TrainResult, out: dict[str, Any]) -> None:
  """f per member at every snapshot step (and the final step) to the workdir's metric writers
  (the members' TensorBoard runs): scalars f/sigma_<i>, and the image f_of_sigma at
  `tensorboard.image_steps` of them (`rl_align.tensorboard.write_f`)."""
  steps = {s["step"]: s["f"] for s in out["snapshots"]}
  steps.setdefault(res.final_step, out["f"])
  with_image = set(tensorboard.image_steps(list(steps)))
  writer = workdir_lib.writer(workdir)
  for step in sorted(steps):
    tensorboard.write_f(
      writer, "train", res.seed_ids, step, steps[step], out["sigma"], image=step in with_image
    )


@train.driven
def run(config, workdir: str) -> Generator:
  """Trains the seeds, analyses final weights and snapshots, writes results.json/arrays.npz/plots;
  returns the results dict (`run.steps`: the generator of its train call, `train.driven`)."""
  t0 = time.time()
  data = inputs.load(config, workdir)
  lam, V = data_eigenbasis(config, data.parts["train"])
  x, labels = data.engine_input("train", config.train, inputs.config_labels(config))
  model = models.build(config.model)
  res = yield train.call(model, config.train, x, labels, workdir=workdir, name="train")
  out = analyse(config, res, lam, V)
  write_f_tensorboard(workdir, res, out)
  out["num_train_examples"] = data.sizes["train"]
  out["runtime_s"] = time.time() - t0
  out["layout"] = res.layout
  results.write_json(workdir, "results.json", out)
  results.write_npz(
    workdir,
    "arrays.npz",
    {
      "eigenvalues": lam,
      "eigenvectors": V,
      "f": out["f"],
      "first_kernel": models.first_layer_kernel(res.params),
      **{f"snapshot_{s['step']}_f": s["f"] for s in out["snapshots"]},
    },
  )
  plots.plot_eigenmap(
    out, workdir, title=config.get("title", ""), reference=config.get("paper_reference", None)
  )
  return out


def validate(config) -> None:
  """What `run_panels` / `run_misalignment` / `run` check before any data is read: the panels
  exist, and each panel's engine fields and labels are valid (the binaries call it before
  writing anything)."""
  names = list(config.get("panels") or {}) if "panels" in config else [None]
  if "panels" in config and not names:
    raise errors.ConfigError(
      "config.panels is empty: nothing to run. Fix: pick a panel, e.g. fig20.py:right or :all."
    )
  for name in names:
    pcfg = config if name is None else panel_config(config, name)
    engine_config.validate_fields(pcfg.train, "train")
    inputs.config_labels(pcfg)


def panel_config(config, name: str) -> ml_collections.ConfigDict:
  """The full config of one panel: the shared fields updated with config.panels[name]."""
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


@train.driven
def run_panels(config, workdir: str, f_figure: str | None = None) -> Generator:
  """Runs every panel of config.panels in workdir/<panel>/ and draws their f curves in one figure
  (workdir/<f_figure or config.figure_name>); returns the summary dict."""
  return (yield from _run_panels(config, workdir, f_figure))[0]


def _run_panels(config, workdir: str, f_figure: str | None) -> Generator:
  """(summary, each panel's results) of `run_panels`, as a generator of train calls."""
  if not config.get("panels"):
    raise errors.ConfigError(
      "config.panels is empty: nothing to run. Fix: pick a panel, e.g. fig20.py:right or :all."
    )
  summary, outs, refs, judged = {}, [], [], {}
  for name in config.panels:
    pcfg = panel_config(config, name)
    pdir = phases.subdir(workdir, name, pcfg)
    out = yield from run.steps(pcfg, pdir)
    d = len(out["eigenvalues"])
    summary[name] = {
      "checks": lib.shape_checks(out, d, pcfg.get("paper_reference")),
      "train_accuracy": out["train_accuracy"],
      "num_seeds": out["num_seeds"],
      "num_diverged": out["num_diverged"],
      "runtime_s": out["runtime_s"],
      "workdir": pdir,
    }
    outs.append(out)
    refs.append(pcfg.get("paper_reference"))
    judged[name] = {"results": phases.jsonable(out), "config": pcfg.to_dict()}
  path = os.path.join(workdir, f_figure or config.get("figure_name", "panels.png"))
  if config.get("figure_style") == "epochs":
    fig = plots.plot_f_over_epochs(outs, list(config.panels), path)
  else:
    fig = plots.plot_panels(outs, list(config.panels), refs, path)
  summary["figure"] = fig
  summary["claims"] = claims.stamp(config, summary, judged)
  results.write_json(workdir, "results.json", summary)
  return summary, outs


@train.driven
def run_misalignment(config, workdir: str) -> Generator:
  """Fig 2: run the panels, then draw misalignment over training for all of them in one figure."""
  summary, outs = yield from _run_panels(config, workdir, f_figure="f_panels.png")
  runs = {name: phases.jsonable(out["snapshots"]) for name, out in zip(config.panels, outs)}
  summary["misalignment_figure"] = plots.plot_misalignment(
    runs, os.path.join(workdir, config.get("figure_name", "misalignment.png"))
  )
  for name, snaps in runs.items():
    summary[name]["misalignment_over_training"] = lib.misalignment_over_training(snaps)
  results.write_json(workdir, "results.json", summary)
  return summary
