"""Every paper-scale config that reads tfds runs end to end under `tfds.testing.mock_data`.

A GPU user's first paper-scale run must not fail on a config bug.  Each case takes the config
exactly as a user gets it (`get_config(arg)`), shrinks only sizes (examples of the mocked dataset
and of the splits, steps, seeds, batch and eval sizes, the sweep grid), never the model or the code
path, and runs it through the binaries' entry `experiments.cli.run_main` with the runner its binary
launches: real `tfds.data_source` reads of the mocked dataset, the engine, the analysis, the plots,
config.json, results.json and run.json.

The cases run in two subprocesses at once (XLA compiles on one core; the models are the paper's, so
compiling dominates), sharing JAX's on-disk compilation cache with the other end-to-end tests; a
case that fails leaves its traceback in WORKDIR/FAILED.txt for its test to show.  By hand:
    python -m tests.test_paper_configs /tmp/paper fig5 fig3
"""
import json
import os
import subprocess
import sys
import traceback

import pytest

from tests.helpers import JAX_CACHE_ENV, ROOT

MOCK_EXAMPLES = 48   # per split of the mocked dataset (train, test)
SMALL = {"batch_size": 8, "train_eval_examples": 16, "eval_batch_size": 16,
         "checkpoint_every_secs": 1e9}


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
    "specialization_vgg16_cifar10": ("specialization", "vgg16_cifar10", _shrink_specialization,
                                     "specialization.run"),
    "specialization_resnet18_cifar10": ("specialization", "resnet18_cifar10",
                                        _shrink_specialization, "specialization.run"),
    "specialization_resnet18_imagenet": ("specialization", "resnet18_imagenet",
                                         _shrink_specialization, "specialization.run"),
}
# Two groups of about equal cost, one per subprocess.
GROUPS = (["fig1_positive", "fig5", "fig2", "specialization_resnet18_cifar10", "fig4_cnn"],
          ["fig1_negative", "fig3", "specialization_vgg16_cifar10",
           "specialization_resnet18_imagenet"])


def configs(name):
  """(the config as a user gets it, the shrunk config the case runs)."""
  import importlib  # pylint: disable=g-import-not-at-top
  module, arg, shrink, _ = CASES[name]
  get = importlib.import_module(f"experiments.configs.{module}").get_config
  return get(arg), shrink(get(arg))


def run_cases(workroot: str, names) -> None:
  """Runs the cases (in this process) under mock tfds data; a failure goes to WORKDIR/FAILED.txt."""
  import importlib  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from experiments import host_devices  # pylint: disable=g-import-not-at-top
  host_devices.expose_host_cores()   # before jax starts: one XLA host device per core, as a binary
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from experiments import cli  # pylint: disable=g-import-not-at-top
  for name in names:
    module, arg, _, runner = CASES[name]
    workdir = os.path.join(workroot, name)
    os.makedirs(workdir, exist_ok=True)
    mod, fn = runner.split(".")
    t0 = time.time()
    try:
      fn = getattr(importlib.import_module(f"rl_align.runners.{mod}"), fn)
      with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        cli.run_main(fn, configs(name)[1], workdir,
                     argv=[f"experiments/configs/{module}.py:{arg}", "(shrunk, mock tfds)"])
    except BaseException:  # pylint: disable=broad-except  (also run_main's exit 2)
      with open(os.path.join(workdir, "FAILED.txt"), "w", encoding="utf-8") as f:
        f.write(traceback.format_exc())
    print(f"{name}: {time.time() - t0:.1f} s", flush=True)


@pytest.fixture(scope="module")
def workroot(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("paper_configs"))
  env = {**os.environ, **JAX_CACHE_ENV}
  procs = []
  for i, group in enumerate(GROUPS):
    log = open(os.path.join(root, f"group{i}.log"), "w", encoding="utf-8")
    procs.append((subprocess.Popen([sys.executable, "-m", "tests.test_paper_configs", root, *group],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
  for proc, log in procs:
    proc.wait(timeout=1800)
    log.close()
  return root


def test_groups_hold_every_case_once():
  assert sorted(sum(GROUPS, [])) == sorted(CASES)


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
    d = c.model.kernel_size ** 2 * 3                       # first-layer patch dimension
    for panel in c.panels:
      p = _load(workdir, panel, "results.json")
      assert len(p["f"]) == s and len(p["f"][0]) == len(p["eigenvalues"]) == d, panel
  elif runner == "filters.run":
    assert set(res["subspace_overlap"]) == {"1", "3", "5", "10"} and res["num_filters_pooled"] > 0
  else:  # specialization.run: every (K, L, arm) point of the one (width, lr) cell, highlight found
    sw = c.sweep
    assert len(res["points"]) == len(sw.num_random_classes) * len(sw.upstream_steps) * len(c.arms)
    assert res["highlight"]["negative"] in res["points"]


@pytest.mark.parametrize("name", list(CASES))
def test_paper_config_runs_under_mock_tfds(name, workroot):
  user, shrunk = configs(name)
  assert user.data.name in ("cifar10", "imagenet"), "not a tfds config: drop it from CASES"
  assert shrunk.model.to_dict() == user.model.to_dict()     # the paper's model, unchanged
  workdir = os.path.join(workroot, name)
  failed = os.path.join(workdir, "FAILED.txt")
  if os.path.exists(failed):
    status = _load(workdir, "run.json")["status"] if os.path.exists(
        os.path.join(workdir, "run.json")) else "no run.json"
    pytest.fail(f"{name} failed ({status}):\n{open(failed, encoding='utf-8').read()[-6000:]}")
  _check_results(CASES[name][3], workdir, shrunk)
  run = _load(workdir, "run.json")
  assert run["status"] == "finished" and run["machine"]["fp32_matmul_gflops"] > 0
  # What ran is the user's config with the sizes shrunk, nothing else.
  assert _load(workdir, "config.json") == json.loads(json.dumps(shrunk.to_dict()))


if __name__ == "__main__":
  run_cases(sys.argv[1], sys.argv[2:])
