"""Every paper-scale config that reads tfds: its models fit its data, and each runner runs end to end.

A GPU user's first paper-scale run must not fail on a config bug.  Each case takes the config
exactly as a user gets it (`get_config(arg)`).  For every case, the networks its runner trains are
built from the config and evaluated abstractly (`jax.eval_shape`: nothing compiled) on an example
of the shape the config's dataset yields (opened under `tfds.testing.mock_data`): logits of the
right number of classes.  One case per runner (`E2E`) then runs end to end, with only sizes shrunk
(examples of the mocked dataset and of the splits, steps, seeds, batch and eval sizes, the sweep
grid), never the model or the code path, through the binaries' entry `experiments.cli.run_main`:
real `tfds.data_source` reads of the mocked dataset, the engine, the analysis, the plots,
config.json, results.json and run.json.  The other cases run the same way by hand:
    python -m tests.test_paper_configs /tmp/paper fig1_negative specialization_vgg16_cifar10
"""

import importlib
import json
import os
import sys

import jax
import jax.numpy as jnp
import pytest
import tensorflow_datasets as tfds

from experiments import cli
from rl_align import models
from rl_align import specialization
from rl_align import inputs
from rl_align.runners import eigenmap

MOCK_EXAMPLES = 48  # per split of the mocked dataset (train, test)
SMALL = {
  "batch_size": 8,
  "train_eval_examples": 16,
  "eval_batch_size": 16,
  "checkpoint_every_secs": 1e9,
}


def _shrink_transfer(c):
  c.split.update(upstream=16, downstream=16, test=0)
  c.data.test_examples = 16
  c.train.update(num_seeds=1, **SMALL)
  c.upstream.update(num_steps=2, eval_every_steps=1, train_eval_examples=16)
  c.downstream.update(num_steps=2, eval_every_steps=1, train_eval_examples=16)
  c.layerwise.num_examples = 16
  c.f_only.split.upstream = 16
  c.f_only.upstream.num_steps = 2
  c.report_steps = (1, 2)
  return c


def _shrink_eigenmap(c):
  # 48 examples at batch 8: 6 steps per epoch; one epoch, snapshots at its start and end.
  c.train.update(num_seeds=2, num_epochs=1, snapshot_epochs=(0, 1), snapshot_steps=(), **SMALL)
  return c


def _shrink_specialization(c):
  hl = c.highlight.negative
  c.split.update(upstream=16, downstream=16, test=16)
  c.probe_examples = 8
  c.train.update(num_seeds=1, **SMALL)
  c.upstream.eval_every_steps = 1
  c.downstream.update(num_steps=2, eval_every_steps=1, drop_window=1, train_eval_examples=16)
  # One (width, lr) cell, the highlighted negative point's, with both K and two upstream lengths.
  c.sweep.update(widths=(hl.width,), learning_rates=(hl.learning_rate,), upstream_steps=(1, 2))
  c.highlight.negative.upstream_steps = 2
  c.highlight.wide_width = hl.width
  return c


# name -> (config module, argument, shrink, runner the binary launches: rl_align.runners.<runner>)
CASES = {
  "fig1_positive": ("fig1", "positive", _shrink_transfer, "transfer.run"),
  "fig1_negative": ("fig1", "negative", _shrink_transfer, "transfer.run"),
  "fig5": ("fig5", "", _shrink_transfer, "transfer.run"),
  "fig2": ("fig2", "random,real", _shrink_eigenmap, "eigenmap.run_misalignment"),
  "fig3": ("fig3", "", _shrink_eigenmap, "filters.run"),
  "fig4_cnn": ("fig4_cnn", "random", _shrink_eigenmap, "eigenmap.run_panels"),
  "specialization_vgg16_cifar10": (
    "specialization",
    "vgg16_cifar10",
    _shrink_specialization,
    "specialization.run",
  ),
  "specialization_resnet18_cifar10": (
    "specialization",
    "resnet18_cifar10",
    _shrink_specialization,
    "specialization.run",
  ),
  "specialization_resnet18_imagenet": (
    "specialization",
    "resnet18_imagenet",
    _shrink_specialization,
    "specialization.run",
  ),
}
# The case that runs end to end for each runner (the cheapest model of those that use it).
E2E = {
  "transfer.run": "fig5",
  "eigenmap.run_misalignment": "fig2",
  "filters.run": "fig3",
  "eigenmap.run_panels": "fig4_cnn",
  "specialization.run": "specialization_resnet18_imagenet",
}


def configs(name):
  """(the config as a user gets it, the shrunk config the case runs)."""
  module, arg, shrink, _ = CASES[name]
  get = importlib.import_module(f"experiments.configs.{module}").get_config
  return get(arg), shrink(get(arg))


def run_case(name: str, workdir: str) -> None:
  """Runs the shrunk case through `experiments.cli.run_main` (in this process) under mock tfds."""
  module, arg, _, runner = CASES[name]
  mod, fn = runner.split(".")
  fn = getattr(importlib.import_module(f"rl_align.runners.{mod}"), fn)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    cli.run_main(
      fn,
      configs(name)[1],
      workdir,
      argv=[f"experiments/configs/{module}.py:{arg}", "(shrunk, mock tfds)"],
    )


def test_every_runner_has_one_end_to_end_case():
  assert set(E2E) == {case[3] for case in CASES.values()}
  assert all(CASES[name][3] == runner for runner, name in E2E.items())


def _networks(runner: str, c, num_real: int) -> list:
  """(model config, number of classes) of every network the runner trains for config c, whose
  dataset has num_real classes (rl_align.runners: transfer's upstream and downstream heads,
  specialization's max-K and real heads at the narrowest and widest widths, one net per panel)."""
  if runner == "transfer.run":
    down = num_real if c.downstream.labels == "real" else c.downstream.num_random_classes
    return [(c.model, c.upstream.num_classes), (c.model, down)]
  if runner == "specialization.run":
    sw = c.sweep
    return [
      (specialization.with_width(c.model, sw.width_field, sw.width_from, w), k)
      for w in (min(sw.widths), max(sw.widths))
      for k in (max(sw.num_random_classes), num_real)
    ]
  if "panels" in c:
    return [(eigenmap.panel_config(c, p).model, None) for p in c.panels]
  return [(c.model, None)]


@pytest.mark.parametrize("name", list(CASES))
def test_paper_models_fit_their_data_without_compiling(name):
  """The user's config: its dataset's example shape (mock tfds), and on it the abstract init and
  forward pass of every network the runner trains (logits [batch, classes])."""
  user, _ = configs(name)
  assert user.data.name in ("cifar10", "imagenet"), "not a tfds config: drop it from CASES"
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    src = inputs.source_split(user.data, "train")
  nets = _networks(CASES[name][3], user, src.num_classes)
  x = jax.ShapeDtypeStruct((2,) + tuple(src.example_shape), jnp.float32)
  for model_cfg, classes in nets:
    model_cfg = model_cfg.to_dict()
    classes = model_cfg["num_classes"] if classes is None else int(classes)
    model = models.build({**model_cfg, "num_classes": classes})
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    logits = jax.eval_shape(model.apply, params, x)
    assert logits.shape == (2, classes), (model_cfg, logits.shape)


def _load(workdir, *path):
  with open(os.path.join(workdir, *path), encoding="utf-8") as f:
    return json.load(f)


def _check_results(runner: str, workdir: str, c) -> None:
  """The runner's results.json holds what the config asked for, with the shrunk sizes."""
  res = _load(workdir, "results.json")
  s = c.train.num_seeds
  if runner == "transfer.run":
    assert set(res["arms"]) == set(c.arms)
    for arm in c.arms:
      assert len(res["arms"][arm]["train_accuracy"]) == s, arm
  elif runner.startswith("eigenmap."):
    assert set(res) >= set(c.panels)
    d = c.model.kernel_size**2 * 3  # first-layer patch dimension
    for panel in c.panels:
      p = _load(workdir, panel, "results.json")
      assert len(p["f"]) == s and len(p["f"][0]) == len(p["eigenvalues"]) == d, panel
  elif runner == "filters.run":
    assert set(res["subspace_overlap"]) == {"1", "3", "5", "10"} and res["num_filters_pooled"] > 0
  else:  # specialization.run: every (K, L, arm) point of the one (width, lr) cell, highlight found
    sw = c.sweep
    assert len(res["points"]) == len(sw.num_random_classes) * len(sw.upstream_steps) * len(c.arms)
    assert res["highlight"]["negative"] in res["points"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(E2E.values()))
def test_paper_config_runs_under_mock_tfds(name, tmp_path):
  user, shrunk = configs(name)
  assert shrunk.model.to_dict() == user.model.to_dict()  # the paper's model, unchanged
  workdir = str(tmp_path)
  run_case(name, workdir)
  _check_results(CASES[name][3], workdir, shrunk)
  run = _load(workdir, "run.json")
  assert run["status"] == "finished" and run["machine"]["fp32_matmul_gflops"] > 0
  # What ran is the user's config with the sizes shrunk, nothing else.
  assert _load(workdir, "config.json") == json.loads(json.dumps(shrunk.to_dict()))


if __name__ == "__main__":
  for case in sys.argv[2:]:
    run_case(case, os.path.join(sys.argv[1], case))
