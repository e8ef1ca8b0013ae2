"""Sweeps through a binary (subprocesses, as a user runs them): packing, task splits, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import sweep_summary
from rl_align import sweep
from tests import helpers
from tests.helpers import ROOT

CONFIG = "--config=experiments/configs/fig20.py:right,tiny"


def _run(*args, timeout=600, env=None):
  return helpers.run_module("experiments.eigenvalue_map", CONFIG, *args, timeout=timeout, env=env)


def _kernel(wd):
  return np.load(os.path.join(wd, "right", "arrays.npz"))["first_kernel"]


@pytest.mark.slow  # the binary, end to end
def test_packed_sweep_runs_one_program_per_group_and_writes_the_documented_files(sweep_one_task):
  """The session's sweep (tests/conftest.py, `helpers.SPLIT_SWEEP`): 2 batch sizes x (learning rate,
  root seed) zipped; the points of one batch size pack into one program (2 points x 2 members)."""
  wd, proc = sweep_one_task
  assert proc.stderr.count("4 members of 2 packed calls") == 2  # one program per batch size
  out = json.load(open(wd / "sweep.json"))
  assert [p["fields"] for p in out["points"]] == [
    {"train.batch_size": b, "train.learning_rate": lr, "train.seed": s}
    for b in (64, 128)
    for lr, s in ((0.01, 0), (0.05, 3))
  ]
  for p in out["points"]:
    assert os.path.isfile(wd / p["workdir"] / "right" / "results.json")
    acc = p["summary"]["right/train_accuracy"]
    assert 0 <= acc["mean"] <= 1 and acc["std"] is not None
  assert (wd / "sweep.csv").read_text().count("\n") == 5
  # Each group's packed state has a folder of its own, named after what it does not pack.
  assert sorted(os.listdir(wd / "packed")) == ["train.batch_size=128", "train.batch_size=64"]
  assert all(len(os.listdir(wd / "packed" / g)) == 1 for g in os.listdir(wd / "packed"))
  steps = {}
  for p in out["points"]:
    assert not os.path.exists(wd / p["workdir"] / "right" / "train_state")
    # Each point's run.json counts its own calls' steps only: 1 epoch x 2 members.
    calls = json.load(open(wd / p["workdir"] / "run.json"))["accounting"]["calls"]
    assert calls == {
      "train": {
        "calls": 1,
        "flops": calls["train"]["flops"],
        "model_steps": calls["train"]["model_steps"],
        "seconds": calls["train"]["seconds"],
      }
    }
    assert calls["train"]["seconds"]["train"] > 0
    steps.setdefault(p["fields"]["train.batch_size"], set()).add(calls["train"]["model_steps"])
  # Half the batch, twice the steps.
  assert steps[64] == {2 * min(steps[128])} and len(steps[128]) == 1
  for f in ("sweep_train.batch_size.png", "sweep_train.learning_rate.png", "sweep_train.seed.png"):
    assert (wd / f).stat().st_size > 1000


@pytest.mark.slow  # the binary, end to end
def test_packed_member_equals_its_point_run_alone(sweep_one_task, tmp_path):
  wd, _ = sweep_one_task
  proc = _run(
    f"--workdir={tmp_path}",
    "--config.train.num_epochs=1",
    "--config.train.batch_size=128",
    "--config.train.learning_rate=0.05",
    "--config.train.seed=3",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  np.testing.assert_array_equal(  # the same per-member program on one machine: bitwise
    _kernel(wd / "points" / "train.batch_size=128,train.learning_rate=0.05,train.seed=3"),
    _kernel(tmp_path),
  )


@pytest.mark.slow  # the binary, end to end
def test_two_task_split_gives_the_same_sweep_json_as_one_task(sweep_one_task, tmp_path):
  args = helpers.SPLIT_SWEEP
  one_dir, _ = sweep_one_task  # the same sweep in one task (tests/conftest.py)
  # Two tasks at the same time, as a SLURM job array (ids 1..2) would start them.
  env = lambda i: {
    "SLURM_ARRAY_TASK_ID": str(i),
    "SLURM_ARRAY_TASK_MIN": "1",
    "SLURM_ARRAY_TASK_COUNT": "2",
  }
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "experiments.eigenvalue_map",
        CONFIG,
        f"--workdir={tmp_path / 'two'}",
        *args,
      ],
      cwd=ROOT,
      text=True,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      env=dict(os.environ, **env(i)),
    )
    for i in (1, 2)
  ]
  outs = [p.communicate(timeout=600) for p in procs]
  assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
  assert sum("runs 1 group(s), 2 point(s)" in o[1] for o in outs) == 2
  a = json.load(open(one_dir / "sweep.json"))
  b = json.load(open(tmp_path / "two" / "sweep.json"))
  assert a == b
  # The summary command (its main, in this process) rewrites the same file.
  assert sweep_summary.main(["sweep_summary", str(tmp_path / "two")]) == 0
  assert json.load(open(tmp_path / "two" / "sweep.json")) == a


def test_bad_sweep_input_is_one_line_from_the_binary(tmp_path):
  """The contract as a user meets it (one subprocess): exit code 2, one `error:` line, no traceback,
  nothing run.  The other bad inputs go through the same entry in-process (below)."""
  proc = _run(f"--workdir={tmp_path}", "--sweep=train.learnig_rate=0.1,0.2", timeout=120)
  assert proc.returncode == 2
  err = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(err) == 1 and "no field 'train.learnig_rate'" in err[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(tmp_path / "points")


@pytest.mark.parametrize(
  "values, words",
  [
    ({"sweep": ["train.batch_size=0.5,1.5"]}, "is a float but the config's field is a int"),
    ({"sweep": ["train.learning_rate="]}, "empty"),
    ({"sweep": ["train.learning_rate=0.1"], "num_tasks": 2, "task_index": 2}, "--task_index=2"),
    ({"sweep_zip": ["train.learning_rate=0.1,0.2;train.momentum=0.9"]}, "same number of values"),
  ],
)
def test_bad_sweep_input_is_one_line_before_compiling(tmp_path, capsys, values, words):
  """The binary's entry (`cli.run_main`) with the scale-out flags set as the command line sets
  them: exit code 2 on one `error:` line, before any point runs."""
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from experiments import cli, scaleout  # pylint: disable=g-import-not-at-top
  from experiments.configs import fig20  # pylint: disable=g-import-not-at-top
  from rl_align.runners import eigenmap  # pylint: disable=g-import-not-at-top

  scaleout.define_flags()  # values set as parsing would set them, without parsing the flags
  with flagsaver.flagsaver(**values), pytest.raises(SystemExit) as e:
    cli.run_main(
      eigenmap.run_panels,
      fig20.get_config("right,tiny"),
      str(tmp_path),
      argv=["experiments/eigenvalue_map.py", f"--workdir={tmp_path}"],
    )
  assert e.value.code == 2
  err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
  assert len(err) == 1 and words in err[0], err
  assert not os.path.exists(tmp_path / "points")


@pytest.mark.slow  # the binary, end to end
def test_a_workdir_with_another_sweep_is_refused(sweep_one_task):
  wd, _ = sweep_one_task
  proc = _run(f"--workdir={wd}", "--sweep=train.learning_rate=0.3", timeout=120)
  assert proc.returncode == 2 and "holds another sweep" in proc.stderr


def test_expand_and_group_are_pure_and_typed():
  import ml_collections

  cfg = ml_collections.ConfigDict(
    {"train": {"learning_rate": 0.1, "batch_size": 8, "seed": 0}, "data": {"kwargs": {"seed": 0}}}
  )
  axes = sweep.parse_axes(
    ["train.learning_rate=1,2", "train.batch_size=8,16"], ["train.seed=0,1;data.kwargs.seed=5,6"]
  )
  points = sweep.expand(cfg, axes)
  assert len(points) == 8
  assert isinstance(points[0].config.train.learning_rate, float)  # int literal -> float field
  # Learning rate and root seed pack; batch size and the data seed do not.
  groups = sweep.group_points(points)
  assert sorted(len(g) for g in groups) == [2, 2, 2, 2]
  assert sweep.group_points(points, packing=False) == [[i] for i in range(8)]
  assert sweep.task_share(5, 1, 2) == [1, 3]


def test_plot_field_places_tuple_values_by_their_repr(tmp_path):
  """A swept tuple field (e.g. sweep.learning_rates=(0.01,),(0.02,)) comes back from JSON as lists:
  the figure is still drawn, one x position per value."""
  from rl_align.plots import sweep as sweep_plots  # pylint: disable=g-import-not-at-top

  rows = [
    {"fields": {"sweep.learning_rates": [lr]}, "summary": {"gain": {"mean": g, "std": 0.1}}}
    for lr, g in ((0.01, 1.5), (0.02, 1.2))
  ]
  path = sweep_plots.plot_field(rows, "sweep.learning_rates", str(tmp_path / "lr.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
