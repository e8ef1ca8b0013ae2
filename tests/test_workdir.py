"""A workdir a run can trust (rl_align.workdir, rl_align.metric_writers, rl_align.interrupts,
experiments.cli): one run per workdir, damage found and survived, every mistake one line, the
config validated before anything is written, interrupts that stop cleanly and resume.

In-process through `cli.run_main` (as the binaries run) wherever possible; one subprocess per
signal contract.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from experiments import cli
from experiments.configs import fig20
from rl_align import errors
from rl_align import metric_writers
from rl_align import results
from rl_align import workdir
from rl_align.engine import checkpoint
from rl_align.runners import eigenmap as eigenmap_runner
from tests import helpers

ARGV = ["experiments/eigenvalue_map.py", "--config=experiments/configs/fig20.py:right,tiny"]


def _config(**train):
  c = fig20.get_config("right,tiny")
  for k, v in train.items():
    c.train[k] = v
  return c


def _run(c, wd):
  return cli.run_main(eigenmap_runner.run_panels, c, str(wd), argv=ARGV)


def _one_line(capsys, c, wd):
  """run_main's refusal: exit 2 and one `error: ... Fix: ...` line on stderr."""
  with pytest.raises(SystemExit) as e:
    _run(c, wd)
  assert e.value.code == 2
  err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
  assert len(err) == 1 and "Fix:" in err[0], err
  return err[0]


# ----------------------------------------------------------------------------------------------
# One run per workdir.


def test_a_second_run_on_a_held_workdir_is_refused_naming_the_holder(tmp_path, capsys):
  with workdir.Lock(str(tmp_path), active=True, argv=["first", "run"]):
    line = _one_line(capsys, _config(), tmp_path)
  assert f"pid {os.getpid()}" in line and socket.gethostname() in line and "first run" in line
  assert not (tmp_path / "config.json").exists()  # the refused run wrote nothing


def test_a_lock_left_by_a_dead_process_does_not_block(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      "-c",
      (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'{\"pid\": 1}'); os._exit(9)"
      ),
      str(tmp_path / workdir.LOCK),
    ],
    check=False,
  )
  assert proc.returncode == 9 and (tmp_path / workdir.LOCK).exists()
  with workdir.Lock(str(tmp_path), active=True) as lock:
    assert lock.fd is not None


# ----------------------------------------------------------------------------------------------
# Damage: metrics.jsonl, checkpoints, JSON files.


def test_a_torn_line_anywhere_is_reported_and_the_valid_rows_are_kept(tmp_path, caplog):
  path = tmp_path / "metrics.jsonl"
  rows = [{"phase": p, "step": s, "seed": 0} for p in ("upstream", "down") for s in (1, 2, 3)]
  lines = [json.dumps(r) for r in rows]
  lines.insert(2, '{"phase": "upstream", "st')  # torn in the middle of the file
  path.write_text("\n".join(lines) + "\n")
  w = metric_writers.JsonlWriter(str(path))
  kept = w.read_rows("down", max_step=2)  # resuming phase "down" at step 2
  assert [r["step"] for r in kept] == [1, 2]
  assert "line(s) [3]" in caplog.text
  left, bad = metric_writers.parse_jsonl(str(path))
  assert not bad and [(r["phase"], r["step"]) for r in left] == [
    ("upstream", 1),
    ("upstream", 2),
    ("upstream", 3),
    ("down", 1),
    ("down", 2),
  ]


def test_other_processes_read_back_but_never_rewrite(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"phase": "a", "step": 5}\n{"phase": "a", "step": 9}\n')
  w = metric_writers.JsonlWriter(str(path), writes=False)
  assert [r["step"] for r in w.read_rows("a", 5)] == [5]
  w.write_rows([{"phase": "a", "step": 10}])
  assert path.read_text().count("\n") == 2


def _train_twice(tmp_path):
  """A tiny engine run with a checkpoint at each of its 4 log steps (2 kept)."""
  from rl_align import models, train  # pylint: disable=g-import-not-at-top
  from tests.helpers import train_config  # pylint: disable=g-import-not-at-top

  cfg = train_config(num_seeds=2, num_epochs=4, batch_size=8, checkpoint_every_secs=0.0)
  x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
  y = np.arange(16, dtype=np.int32) % 2
  run = lambda: train.train(
    models.DenseNet(widths=(4,), num_classes=2), cfg, x, y, workdir=str(tmp_path)
  )
  return run


@pytest.mark.parametrize("damage", ["metadata", "truncate"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_intact_one(tmp_path, caplog, damage):
  run = _train_twice(tmp_path)
  first = run()
  root = tmp_path / "train_state" / "checkpoints"
  steps = sorted(int(s) for s in os.listdir(root) if s.isdigit())
  assert len(steps) == checkpoint.KEEP == 2
  newest = root / str(steps[-1])
  files = [os.path.join(d, f) for d, _, fs in os.walk(newest) for f in fs]
  if damage == "metadata":
    for f in files:
      if os.path.basename(f) == "_METADATA":
        os.remove(f)
  else:
    for f in files:
      if "d/" in f.replace(os.sep, "/") or os.path.basename(f).startswith("ocdbt"):
        with open(f, "r+b") as h:
          h.truncate(max(0, os.path.getsize(f) // 3))
  again = run()  # resumes from the older checkpoint and trains the rest again: same result
  assert "damaged and skipped" in caplog.text and f"step {steps[0]}" in caplog.text
  np.testing.assert_array_equal(
    again.params["dense_0"]["kernel"], first.params["dense_0"]["kernel"]
  )


def test_no_readable_checkpoint_is_one_line(tmp_path):
  run = _train_twice(tmp_path)
  run()
  root = tmp_path / "train_state" / "checkpoints"
  for d, _, fs in os.walk(root):
    for f in fs:
      os.remove(os.path.join(d, f))
  with pytest.raises(errors.WorkdirError, match="no checkpoint in .* can be read.*Fix: delete"):
    run()


def test_damaged_config_json_and_unusable_workdirs_are_one_line(tmp_path, capsys, monkeypatch):
  wd = tmp_path / "wd"
  wd.mkdir()
  (wd / "config.json").write_text('{"data": {"name": "gau')  # cut short
  (wd / "results.json").write_text("{}")  # something was computed
  assert "config.json is damaged" in _one_line(capsys, _config(), wd)
  afile = tmp_path / "a_file"
  afile.write_text("x")
  assert "is not a folder" in _one_line(capsys, _config(), afile)
  real_open = open

  def read_only(path, *a, **kw):
    if ".write-test-" in str(path):
      raise OSError(30, "Read-only file system", str(path))
    return real_open(path, *a, **kw)

  monkeypatch.setattr("builtins.open", read_only)
  assert "is not writable (read-only file system)" in _one_line(capsys, _config(), tmp_path / "ro")


def test_outputs_are_readable_by_the_group_and_others(tmp_path):
  path = results.write_json(str(tmp_path), "results.json", {"a": 1})
  assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~results._umask())


# ----------------------------------------------------------------------------------------------
# The config: validated before writing, mismatches named, run-only fields free.


@pytest.mark.parametrize(
  "field,value,words",
  [
    ("batch_size", 0, "batch_size: must be an integer >= 1"),
    ("learning_rate", float("nan"), "learning_rate: must be a finite number > 0"),
    ("learning_rate", float("inf"), "learning_rate: must be a finite number > 0"),
    ("num_seeds", 0, "num_seeds: must be an integer >= 1"),
    ("num_seeds", -1, "num_seeds: must be an integer >= 1"),
  ],
)
def test_a_rejected_config_writes_nothing_and_the_fix_names_a_real_flag(
  tmp_path, capsys, field, value, words
):
  c = _config(**{field: value})
  line = _one_line(capsys, c, tmp_path / "wd")
  assert words in line
  assert not (tmp_path / "wd" / "config.json").exists()
  flag = line.split("Fix: --config.")[1].split("=")[0]  # e.g. train.batch_size
  node = c
  for part in flag.split("."):
    assert part in node, (flag, line)
    node = node[part]


def test_the_fix_of_every_refusal_names_a_field_of_its_config(tmp_path, capsys):
  """Bad values of several kinds through the binary's entry: each Fix flag exists."""
  bad = [
    ("train", "optimizer", "adamw"),
    ("train", "grad_microbatch", 7),
    ("train", "momentum", float("nan")),
    ("train", "checkpoint_every_secs", -1.0),
    ("train", "num_epochs", 0),
  ]
  for i, (where, field, value) in enumerate(bad):
    c = _config()
    c[where][field] = value
    if field == "num_epochs":
      c.train.num_steps = 0
    line = _one_line(capsys, c, tmp_path / f"wd{i}")
    flag = line.split("Fix: --config.")[1].split("=")[0]
    assert flag.split(".")[-1] in c[flag.split(".")[0]], line


def test_the_corrected_command_runs_on_the_workdir_a_rejection_left(tmp_path, capsys):
  """A config rejected later (by the data: batch_size > N) leaves config.json and run.json; the
  corrected command is not refused as 'another config', since nothing was computed."""
  wd = tmp_path / "wd"
  line = _one_line(capsys, _config(batch_size=100_000), wd)
  assert "batch_size" in line and (wd / "config.json").exists()
  _run(_config(), wd)
  assert json.loads((wd / "run.json").read_text())["status"] == "finished"


def test_a_resume_with_another_config_names_each_field_and_run_only_fields_may_change(
  tmp_path, capsys
):
  wd = tmp_path / "wd"
  _run(_config(), wd)
  line = _one_line(capsys, _config(learning_rate=0.5, momentum=0.5), wd)
  assert "train.learning_rate: 0.02 there, 0.5 now" in line and "train.momentum: 0.9 there" in line
  _run(_config(checkpoint_every_secs=5.0, log_every_steps=2), wd)  # resumes: nothing differs


def test_task_index_without_a_sweep_is_an_error(tmp_path):
  proc = helpers.run_module(
    "experiments.eigenvalue_map", ARGV[1], f"--workdir={tmp_path}", "--task_index=1", timeout=300
  )
  assert proc.returncode == 2
  err = proc.stderr.strip().splitlines()[-1]
  assert err.startswith("error: --task_index splits a sweep") and "Fix:" in err


def test_run_json_says_what_data_was_read_and_why(tmp_path):
  """Fashion-MNIST with a data_dir that does not exist falls back to the Debian copy: the log and
  run.json say so (the idx files are generated here, in a folder the default data_dir points to)."""
  from experiments.configs import fig3  # pylint: disable=g-import-not-at-top
  from rl_align.runners import filters  # pylint: disable=g-import-not-at-top
  from tests import fake_idx  # pylint: disable=g-import-not-at-top

  folder = fake_idx.write(tmp_path / "idx", n_train=300, n_test=80)
  c = fig3.get_config("fmnist,tiny")
  c.data.data_dir = folder
  cli.run_main(filters.run, c, str(tmp_path / "wd"), argv=["x"])
  rec = json.loads((tmp_path / "wd" / "run.json").read_text())
  assert rec["data_read"] == [{"dataset": "fashion_mnist", "split": "train", "from": folder}]


# ----------------------------------------------------------------------------------------------
# Signals: one subprocess per contract.


# A run long enough to interrupt: 400 epochs (1600 steps, ~1 ms each on 2 cores at width 256;
# the signal is sent as soon as the first progress line is read, so the run cannot end before it).
LONG = [
  "--config.train.num_epochs=400",
  "--config.train.checkpoint_every_secs=1000",
]
WIDTH = "--config.panels.right.model.widths=(256,256)"
# Steps slow enough (~10 ms) that a second signal lands between two event steps 300 apart.
SLOW = "--config.panels.right.model.widths=(1024,1024)"


def _start(wd, *extra, width=WIDTH):
  """The fig20 binary on LONG at `width` (and `extra` flags), started; returns (process, lines
  seen up to its first progress line: training has begun, a signal now stops at an event step)."""
  cmd = [
    sys.executable,
    "-m",
    "experiments.eigenvalue_map",
    ARGV[1],
    f"--workdir={wd}",
    *LONG,
    width,
    *extra,
  ]
  proc = subprocess.Popen(
    cmd, cwd=helpers.ROOT, stderr=subprocess.PIPE, text=True, env=helpers.child_env()
  )
  seen = []
  for line in proc.stderr:
    seen.append(line)
    if "train step" in line:
      return proc, seen
  raise AssertionError("no progress line: " + "".join(seen[-20:]))


def _finish(proc, timeout=120):
  rest = proc.stderr.read()
  return proc.wait(timeout=timeout), rest


@pytest.mark.slow
def test_sigint_stops_at_a_checkpoint_exits_130_and_the_rerun_resumes(tmp_path):
  wd = tmp_path / "wd"
  proc, _ = _start(wd)
  proc.send_signal(signal.SIGINT)
  rc, err = _finish(proc)
  assert rc == 130, err[-2000:]
  assert "interrupted (signal 2) at step" in err and "Traceback" not in err
  status = json.loads((wd / "run.json").read_text())["status"]
  step = int(status.split("at step ")[1].split()[0])
  assert status == f"interrupted at step {step} of train"
  assert str(step) in os.listdir(wd / "right" / "train_state" / "checkpoints")
  proc = helpers.run_module(
    "experiments.eigenvalue_map", ARGV[1], f"--workdir={wd}", *LONG, WIDTH, timeout=300
  )
  assert proc.returncode == 0 and f"resumed from step {step}" in proc.stderr, proc.stderr[-2000:]
  rec = json.loads((wd / "run.json").read_text())
  assert rec["status"] == "finished" and rec["earlier_runs"][-1]["status"] == status
  rows, bad = metric_writers.parse_jsonl(str(wd / "right" / "metrics.jsonl"))
  steps = [r["step"] for r in rows if r["seed"] == 0]
  assert not bad and steps == sorted(set(steps)) and steps[-1] == 400 * (512 // 128)


@pytest.mark.slow
def test_a_second_signal_exits_at_once(tmp_path):
  """The first SIGTERM is acknowledged (the run goes on to its next event step); a second one exits
  at once, 143.  (One SIGTERM alone: the two-process test below.)"""
  # Slow steps, event steps 300 apart: signalled at the first progress line (step 300), the run
  # acknowledges, and the second signal lands seconds before the next event step (600).
  proc, _ = _start(tmp_path, "--config.train.log_every_steps=300", width=SLOW)
  proc.send_signal(signal.SIGTERM)
  for line in proc.stderr:  # the first is acknowledged: the loop runs on to its next event
    if "signal 15: stopping" in line:
      break
  else:
    raise AssertionError("the first signal was not acknowledged (the run ended first)")
  proc.send_signal(signal.SIGTERM)
  rc, err = _finish(proc)
  assert rc == 143 and "again: exiting now" in err, err[-2000:]


@pytest.mark.slow
def test_two_processes_stop_at_the_same_step_on_a_sigterm_to_one(tmp_path):
  """SIGTERM (a cluster's preemption) to process 1 of 2 alone: every process stops at the same
  event step after a checkpoint (a collective decides), both exit 143, process 0 records the
  interruption in run.json."""
  from tests import multihost  # pylint: disable=g-import-not-at-top

  wd = tmp_path / "wd"
  procs = multihost.start(
    ["-m", "experiments.eigenvalue_map", ARGV[1], f"--workdir={wd}", *LONG, WIDTH],
    2,
    multihost.port(),
  )
  try:
    for line in procs[1].stderr:  # process 1 trains
      if "train step" in line:
        break
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=multihost.TIMEOUT) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [143, 143], [o[1][-2000:] for o in outs]
  steps = [o[1].split("interrupted (signal")[1].split("at step ")[1].split()[0] for o in outs]
  assert steps[0] == steps[1]
  status = json.loads((wd / "run.json").read_text())["status"]
  assert status == f"interrupted at step {steps[0]} of train"
  assert steps[0] in os.listdir(wd / "right" / "train_state" / "checkpoints")
