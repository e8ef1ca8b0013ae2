"""Several processes with jax.distributed on 127.0.0.1 (gloo collectives on CPU), as a user runs
the binaries on several hosts: the same results as one process with as many devices, and resume
after one process is killed with SIGKILL.  Host-fed training (`pipeline.HostFeed`, each process
feeding only its own members; `tests/multihost_worker.py`) equals device-resident training."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import ROOT, child_env, run_python
from tests.tolerances import assert_same_accuracy, assert_same_run

ARGS = ["-m", "experiments.eigenvalue_map", "--config=experiments/configs/fig20.py:right,tiny",
        "--config.train.checkpoint_every_secs=0"]
TIMEOUT = 300
pytestmark = pytest.mark.slow   # every test starts several processes


def _port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  """Over this process's environment (tests.helpers.child_env): no JAX_ / SLURM_ / OMPI_ variables,
  `devices` XLA host devices."""
  env = {k: None for k in os.environ if k.startswith(("JAX_", "SLURM_", "OMPI_"))}
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _spawn(*args: str) -> subprocess.Popen:
  """`python *args` in ROOT, started (not waited for), one XLA host device."""
  return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=child_env(_env(1)), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _start(workdir, n: int, port: int, extra=()):
  return [_spawn(*ARGS, f"--workdir={workdir}", *extra, f"--coordinator_address=127.0.0.1:{port}",
                 f"--num_processes={n}", f"--process_id={i}") for i in range(n)]


def _wait(procs):
  try:
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert all(p.returncode == 0 for p in procs), [o[1][-3000:] for o in outs]
  return outs


def _kernel(wd):
  return np.load(os.path.join(wd, "right", "arrays.npz"))["first_kernel"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
  wd = tmp_path_factory.mktemp("one")
  proc = run_python(*ARGS, f"--workdir={wd}", env=_env(2), timeout=TIMEOUT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "on 2 cpu device(s) in 1 process(es)" in proc.stderr
  return wd


def test_two_processes_equal_one_process_with_two_devices(one_process, tmp_path):
  outs = _wait(_start(tmp_path, 2, _port()))
  assert "on 2 cpu device(s) in 2 process(es)" in outs[0][1]
  # Same program: bitwise on CPU.  Off CPU the bound over 8 steps of Fig 20 tiny's dense net
  # (30 -> 64 -> 32 -> 10, batch 128): 30 + 64 + 32 + 10 + 32 + 64 + 3 * 128 + 8 roundings a step.
  assert_same_run(_kernel(tmp_path), _kernel(one_process), 8, 624, "first kernel")
  # Process 0 alone wrote the results.
  assert (tmp_path / "right" / "results.json").exists()
  rows = (tmp_path / "right" / "metrics.jsonl").read_text().splitlines()
  assert len(rows) == len((one_process / "right" / "metrics.jsonl").read_text().splitlines())


def test_sigkill_of_one_process_then_relaunch_resumes(one_process, tmp_path):
  longer = ["--config.train.num_epochs=24"]   # 96 steps, a checkpoint at every epoch
  procs = _start(tmp_path, 2, _port(), longer)
  ckpt = tmp_path / "right" / "train_state" / "checkpoints"
  deadline = time.time() + TIMEOUT
  while time.time() < deadline and not (ckpt.exists() and any(
      d.name.isdigit() and int(d.name) >= 8 for d in ckpt.iterdir())):
    time.sleep(0.2)
  assert all(p.poll() is None for p in procs), "the run ended before it could be killed"
  procs[1].send_signal(signal.SIGKILL)
  procs[0].kill()   # its peer is gone: it would wait in a collective until gloo's timeout
  for p in procs:
    p.communicate(timeout=60)
  outs = _wait(_start(tmp_path, 2, _port(), longer))
  assert "resumed from step" in outs[0][1]
  # The uninterrupted reference: one process, 2 devices, same config.
  ref = tmp_path / "ref"
  proc = run_python(*ARGS, f"--workdir={ref}", *longer, env=_env(2), timeout=TIMEOUT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert_same_run(_kernel(tmp_path), _kernel(ref), 96, 624, "first kernel")   # as above, 96 steps


# Host-fed training over several processes: each process's HostFeed serves only the members of its
# own devices (`pipeline.local_rows`, placed with `jax.make_array_from_process_local_data`).
WORKER = ["-m", "tests.multihost_worker"]


def _worker_run(out, devices: int, *extra):
  proc = run_python(*WORKER, f"--out={out}", *extra, env=_env(devices), timeout=TIMEOUT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _worker_params(out):
  with np.load(os.path.join(out, "params.npz")) as z:
    return [z[k] for k in sorted(z.files)]


def _feed_log(out, pid):
  with open(os.path.join(out, f"feed_{pid}.json")) as f:
    return json.load(f)


def test_two_processes_host_fed_equal_one_process_device_resident(tmp_path):
  ref, fed = tmp_path / "ref", tmp_path / "fed"
  proc = _worker_run(ref, 2, "--device")   # the reference: 1 process x 2 devices, x on the devices
  assert "on 2 cpu device(s) in 1 process(es)" in proc.stderr
  assert _feed_log(ref, 0)["loads"] == []   # device-resident: no host feed loaded anything
  port = _port()
  outs = _wait([_spawn(*WORKER, f"--out={fed}", f"--coordinator=127.0.0.1:{port}",
                       "--num_processes=2", f"--process_id={i}") for i in range(2)])
  assert "on 2 cpu device(s) in 2 process(es)" in outs[0][1]
  want, got = _worker_params(ref), _worker_params(fed)
  assert len(want) == len(got) == 6
  for a, b in zip(want, got):
    assert a.shape[0] == 4
    # The same arithmetic on the same batches: bitwise on CPU; off CPU the bound over 12 steps of
    # PaperCNN(4, 8) on 8x8x3, 919 roundings a step (tests/test_layouts.py).
    assert_same_run(b, a, 12, 919, "params")
  assert not np.array_equal(want[0][0], want[0][1])   # the members did train differently
  assert_same_accuracy(np.load(fed / "train_accuracy.npy"), np.load(ref / "train_accuracy.npy"),
                       32)
  # Each process's feed produced only its own members' batches, all 12 steps of them.
  served = []
  for pid in range(2):
    log = _feed_log(fed, pid)
    assert (log["process_index"], log["process_count"], log["local_devices"]) == (pid, 2, 1)
    assert log["loads"], f"process {pid} loaded no chunk"
    ids = {tuple(c["seed_ids"]) for c in log["loads"]}
    assert len(ids) == 1, ids   # one local feed, always the same members
    served.append(list(ids.pop()))
    steps = [(c["t0"], c["t1"]) for c in log["loads"]]
    assert steps[0][0] == 0 and steps[-1][1] == 12, steps
    assert all(a[1] == b[0] for a, b in zip(steps, steps[1:])), steps
  assert served == [[0, 1], [2, 3]], served   # disjoint, together every seed id


def test_host_fed_run_killed_with_sigkill_resumes_to_the_same_params(tmp_path):
  """A host-fed run (4-step buffers) SIGKILLs itself while its feed loads step 24's buffer; the
  relaunch resumes from its last checkpoint (the step is the pipeline's whole position) and ends
  with the parameters of an uninterrupted run, bitwise."""
  ref, fed = tmp_path / "ref", tmp_path / "fed"
  run = ["--num_epochs=8"]   # 48 steps, a checkpoint at every log step (3)
  _worker_run(ref, 2, "--device", *run)
  killed = run_python(*WORKER, f"--out={fed}", *run, "--buffer_steps=4", "--kill_at_step=24",
                      env=_env(2), timeout=TIMEOUT)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert not (fed / "params.npz").exists()
  proc = _worker_run(fed, 2, *run, "--buffer_steps=4")
  resumed = [int(w) for w in proc.stderr.replace(",", " ").split("resumed from step")[1].split()[:1]]
  assert resumed and 0 < resumed[0] < 48, proc.stderr[-2000:]
  for a, b in zip(_worker_params(ref), _worker_params(fed)):
    assert_same_run(b, a, 48, 919, "params")   # bitwise on CPU; off CPU as above, 48 steps
