"""Every figure's `fmnist` config runs end to end at tiny size on generated Fashion-MNIST idx files.

The runs go through the binaries' entry (`experiments.cli.run_main`) with the runner each binary
launches and `--config.data.data_dir` pointing at idx files written by tests/fake_idx.py; the real
files (Debian's dataset-fashion-mnist) are never needed.  Without them, and without a data_dir,
the binary's answer is the one-line error.
"""

import json
import os

import pytest

from experiments import cli
from experiments.configs import fig1, fig2, fig3, fig4_cnn, fig5, specialization
from rl_align.data import idx
from rl_align.runners import eigenmap as eigenmap_runner
from rl_align.runners import filters as filters_runner
from rl_align.runners import specialization as spec_runner
from rl_align.runners import transfer as transfer_runner
from tests import fake_idx

# name -> (config module, argument, runner)
CASES = {
  "fig2": (fig2, "random,real,fmnist,tiny", eigenmap_runner.run_misalignment),
  "fig3": (fig3, "fmnist,tiny", filters_runner.run),
  "fig4": (fig4_cnn, "random,real,fmnist,tiny", eigenmap_runner.run_panels),
  "fig5": (fig5, "fmnist,tiny", transfer_runner.run),
  "fig1_negative": (fig1, "negative,fmnist,tiny", transfer_runner.run),
  "specialization": (specialization, "tiny,fmnist", spec_runner.run),
}


def tiny_config(name: str, data_dir: str):
  module, arg, _ = CASES[name]
  c = module.get_config(arg)
  c.data.data_dir = data_dir
  return c


@pytest.fixture(scope="session")
def fmnist_run(tmp_path_factory):
  """fmnist_run(name) -> the workdir of case `name`'s tiny run (run once per process, on first
  request), on one folder of generated idx files.  Session-scoped, so that pytest-xdist spreads the
  cases over its workers (tests/conftest.py groups module fixtures only); the two tests of the fig5
  run share an xdist group."""
  root = tmp_path_factory.mktemp("fmnist")
  folder = fake_idx.write(root / "idx", n_train=300, n_test=80)
  done = {}

  def get(name: str) -> str:
    if name not in done:
      module, arg, runner = CASES[name]
      workdir = str(root / name)
      cli.run_main(
        runner,
        tiny_config(name, folder),
        workdir,
        argv=[f"experiments/configs/{module.__name__.split('.')[-1]}.py:{arg}"],
      )
      done[name] = workdir
    return done[name]

  return get


def _results(workdir: str) -> dict:
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    return json.load(f)


FIG5_RUN = pytest.mark.xdist_group("fmnist_fig5")  # the tests that read the fig5 run


@pytest.mark.slow
@pytest.mark.parametrize(
  "name", [pytest.param(n, marks=FIG5_RUN) if n == "fig5" else n for n in CASES]
)
def test_fmnist_config_runs_on_idx_files(name, fmnist_run):
  c = tiny_config(name, "")
  assert c.data.name == "fashion_mnist"
  workdir = fmnist_run(name)
  res = _results(workdir)
  if name in ("fig2", "fig4"):
    for panel in c.panels:  # 3x3 grey patches: 9-dimensional first layer
      with open(os.path.join(workdir, panel, "results.json"), encoding="utf-8") as f:
        p = json.load(f)
      assert len(p["f"]) == c.train.num_seeds and len(p["eigenvalues"]) == 9, panel
  elif name == "fig3":
    assert res["num_filters_pooled"] == c.train.num_seeds * c.model.features
  elif name in ("fig5", "fig1_negative"):
    assert set(res["arms"]) == set(c.arms)
    for arm in c.arms:
      assert len(res["arms"][arm]["train_accuracy"]) == c.train.num_seeds, arm
  else:
    assert res["highlight"]["negative"] in res["points"]
  with open(os.path.join(workdir, "run.json"), encoding="utf-8") as f:
    assert json.load(f)["status"] == "finished"


def test_missing_fashion_mnist_is_one_error_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(idx, "debian_folder", lambda name: None)  # as without the Debian package
  monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
  c = tiny_config("fig3", str(tmp_path / "nothing"))
  with pytest.raises(SystemExit) as info:
    cli.run_main(filters_runner.run, c, str(tmp_path / "wd"), argv=["fig3.py:fmnist,tiny"])
  assert info.value.code == 2
  err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
  assert len(err) == 1
  assert "'fashion_mnist'" in err[0] and "apt-get install dataset-fashion-mnist" in err[0]
  assert "tfds build fashion_mnist" in err[0] and str(tmp_path / "nothing") in err[0]


@pytest.mark.slow
@FIG5_RUN
def test_fmnist_streams_through_the_host_pipeline(fmnist_run, tmp_path):
  """placement=host reads Fashion-MNIST through data.source / the host pipeline: same numbers."""
  device = _results(fmnist_run("fig5"))
  c = tiny_config("fig5", os.path.join(os.path.dirname(fmnist_run("fig5")), "idx"))
  c.data.placement = "host"
  cli.run_main(transfer_runner.run, c, str(tmp_path / "host"), argv=["fig5.py:fmnist,tiny"])
  host = _results(str(tmp_path / "host"))
  assert host["data"]["placement"] == "host" and device["data"]["placement"] == "device"
  for arm in c.arms:
    assert host["arms"][arm]["train_accuracy"] == device["arms"][arm]["train_accuracy"], arm
    assert host["arms"][arm]["test_accuracy"] == device["arms"][arm]["test_accuracy"], arm
