"""Several processes with jax.distributed on 127.0.0.1 (gloo collectives on CPU), as a user runs
the binaries on several hosts: the same results as one process with as many devices, and resume
after one process is killed with SIGKILL.  Host-fed training (`pipeline.HostFeed`, each process
feeding only its own members; `tests/multihost_worker.py`) equals device-resident training.

The binary's test compares with one reference run (`one_process`: 1 process x 2 devices, 24
epochs); the worker's tests read the session's one multi-process launch of tests/multihost_worker.py
(`worker_launch`, tests/multihost.py), which also runs tests/test_layouts.py's trainings."""

import os
import signal
import time

import numpy as np
import pytest

from tests import multihost
from tests.helpers import run_python
from tests.tolerances import assert_same_accuracy, assert_same_run

ARGS = [
  "-m",
  "experiments.eigenvalue_map",
  "--config=experiments/configs/fig20.py:right,tiny",
  "--config.train.checkpoint_every_secs=0",
]
LONGER = ["--config.train.num_epochs=24"]  # 96 steps, a checkpoint at every epoch
TIMEOUT = multihost.TIMEOUT
pytestmark = pytest.mark.slow  # every test starts several processes


def _start(workdir, n: int, extra=()):
  return multihost.start([*ARGS, f"--workdir={workdir}", *extra], n, multihost.port())


def _kernel(wd):
  return np.load(os.path.join(wd, "right", "arrays.npz"))["first_kernel"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
  """The binary test's reference: 1 process x 2 devices, 24 epochs (96 steps)."""
  wd = tmp_path_factory.mktemp("one")
  proc = run_python(*ARGS, f"--workdir={wd}", *LONGER, env=multihost.env(2), timeout=TIMEOUT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "on 2 cpu device(s) in 1 process(es)" in proc.stderr
  return wd


def test_two_processes_killed_with_sigkill_and_relaunched_equal_one_process(one_process, tmp_path):
  """2 processes x 1 device, one of them SIGKILLed after the checkpoint of step 8, then both
  relaunched: the run resumes and ends where 1 process x 2 devices does (one run covers both the
  multi-process arithmetic and the resume: a resume that restores the state bitwise cannot hide a
  difference of the 2-process program)."""
  procs = _start(tmp_path, 2, LONGER)
  ckpt = tmp_path / "right" / "train_state" / "checkpoints"
  deadline = time.time() + TIMEOUT
  while time.time() < deadline and not (
    ckpt.exists() and any(d.name.isdigit() and int(d.name) >= 8 for d in ckpt.iterdir())
  ):
    time.sleep(0.2)
  assert all(p.poll() is None for p in procs), "the run ended before it could be killed"
  procs[1].send_signal(signal.SIGKILL)
  procs[0].kill()  # its peer is gone: it would wait in a collective until gloo's timeout
  for p in procs:
    p.communicate(timeout=60)
  outs = multihost.wait(_start(tmp_path, 2, LONGER))
  assert "on 2 cpu device(s) in 2 process(es)" in outs[0][1]
  assert "resumed from step" in outs[0][1]
  # Same program: bitwise on CPU.  Off CPU the bound over 96 steps of Fig 20 tiny's dense net
  # (30 -> 64 -> 32 -> 10, batch 128): 30 + 64 + 32 + 10 + 32 + 64 + 3 * 128 + 8 roundings a step.
  assert_same_run(_kernel(tmp_path), _kernel(one_process), 96, 624, "first kernel")
  # Process 0 alone wrote the results; the resumed records hold each logged step once.
  assert (tmp_path / "right" / "results.json").exists()
  rows = (tmp_path / "right" / "metrics.jsonl").read_text().splitlines()
  assert len(rows) == len((one_process / "right" / "metrics.jsonl").read_text().splitlines())


# Host-fed training over several processes: each process's HostFeed serves only the members of its
# own devices (`pipeline.local_rows`, placed with `jax.make_array_from_process_local_data`).


def _worker_run(out, devices: int, *extra):
  proc = run_python(
    *multihost.WORKER, f"--out={out}", *extra, env=multihost.env(devices), timeout=TIMEOUT
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_two_processes_host_fed_equal_one_process_device_resident(worker_launch):
  root = worker_launch["root"]
  ref, fed = os.path.join(root, "one", "fed"), os.path.join(root, "two", "fed")
  # The reference: 1 process x 2 devices, x on the devices.
  assert "on 2 cpu device(s) in 1 process(es)" in worker_launch["one"][1]
  log = multihost.feed_log(ref, 0)
  assert (log["process_count"], log["devices"]) == (1, 2)
  assert log["loads"] == []  # device-resident: no host feed loaded anything
  assert "on 2 cpu device(s) in 2 process(es)" in worker_launch["two"][0][1]
  want, got = multihost.params(ref), multihost.params(fed)
  assert len(want) == len(got) == 6
  for a, b in zip(want, got):
    assert a.shape[0] == 4
    # The same arithmetic on the same batches: bitwise on CPU; off CPU the bound over 12 steps of
    # PaperCNN(4, 8) on 8x8x3, 919 roundings a step (tests/test_layouts.py).
    assert_same_run(b, a, 12, 919, "params")
  assert not np.array_equal(want[0][0], want[0][1])  # the members did train differently
  assert_same_accuracy(
    np.load(os.path.join(fed, "train_accuracy.npy")),
    np.load(os.path.join(ref, "train_accuracy.npy")),
    32,
  )
  # Each process's feed produced only its own members' batches, all 12 steps of them.
  served = []
  for pid in range(2):
    log = multihost.feed_log(fed, pid)
    assert (log["process_index"], log["process_count"], log["local_devices"]) == (pid, 2, 1)
    assert log["devices"] == 2
    assert log["loads"], f"process {pid} loaded no chunk"
    ids = {tuple(c["seed_ids"]) for c in log["loads"]}
    assert len(ids) == 1, ids  # one local feed, always the same members
    served.append(list(ids.pop()))
    steps = [(c["t0"], c["t1"]) for c in log["loads"]]
    assert steps[0][0] == 0 and steps[-1][1] == 12, steps
    assert all(a[1] == b[0] for a, b in zip(steps, steps[1:])), steps
  assert served == [[0, 1], [2, 3]], served  # disjoint, together every seed id


def test_host_fed_run_killed_with_sigkill_resumes_to_the_same_params(worker_launch, tmp_path):
  """A host-fed run (4-step buffers) SIGKILLs itself while its feed loads step 24's buffer; the
  relaunch resumes from its last checkpoint (the step is the pipeline's whole position) and ends
  with the parameters of an uninterrupted run, bitwise."""
  fed = tmp_path / "fed"
  run = ["--num_epochs=8"]  # 48 steps; the killed run checkpoints at every log step (3)
  # The uninterrupted reference: the launch's "kill_ref" (1 process x 2 devices, device-resident).
  ref = os.path.join(worker_launch["root"], "one", "kill_ref")
  log = multihost.feed_log(ref, 0)
  assert (log["process_count"], log["devices"], log["loads"]) == (1, 2, [])
  killed = run_python(
    *multihost.WORKER,
    f"--out={fed}",
    *run,
    "--buffer_steps=4",
    "--kill_at_step=24",
    env=multihost.env(2),
    timeout=TIMEOUT,
  )
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert not (fed / "params.npz").exists()
  proc = _worker_run(fed, 2, *run, "--buffer_steps=4")
  resumed = [
    int(w) for w in proc.stderr.replace(",", " ").split("resumed from step")[1].split()[:1]
  ]
  assert resumed and 0 < resumed[0] < 48, proc.stderr[-2000:]
  want = multihost.params(ref)
  got = multihost.params(fed)
  assert len(want) == len(got) == 6
  for a, b in zip(want, got):
    assert_same_run(b, a, 48, 919, "params")  # bitwise on CPU; off CPU as above, 48 steps
