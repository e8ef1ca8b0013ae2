"""Several processes with jax.distributed on 127.0.0.1 (gloo collectives on CPU), for
tests/test_multihost.py and tests/test_layouts.py::

    from tests import multihost
    procs = multihost.start(multihost.WORKER, n=2, port=multihost.port(), out=...)
    outs = multihost.wait(procs)

`launch(root)` is the one run of tests/multihost_worker.py that both files check (the session
fixture `worker_launch` of tests/conftest.py): one process with 2 XLA host devices (the reference)
and, at the same time, 2 processes with 1 device each, every process running all the trainings
below one after the other (`--jobs`: process start-up, jax.distributed initialization and gloo
connection once for all of them):

- "fed": 2 epochs (12 steps), host-fed in the 2 processes, device-resident in the reference
  (tests/test_multihost.py: host-fed over processes equals device-resident);
- "vmap", "vmap_im2col", "vmap_pallas": the accelerator layouts, device-resident, 1 epoch (6 steps),
  in both (tests/test_layouts.py: 2 processes equal 1 in each layout);
- "kill_ref": the reference alone, 8 epochs (48 steps), device-resident (tests/test_multihost.py:
  the uninterrupted run a host-fed run killed with SIGKILL and resumed must equal).

The reference's outputs are in ROOT/one/<job>, the 2 processes' in ROOT/two/<job>.
"""

import json
import os
import socket
import subprocess
import sys

from tests.helpers import ROOT, child_env

TIMEOUT = 300
WORKER = ["-m", "tests.multihost_worker"]
LAYOUT_NAMES = ("vmap", "vmap_im2col", "vmap_pallas")


def port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env(devices: int) -> dict:
  """Over this process's environment (tests.helpers.child_env): no JAX_ / SLURM_ / OMPI_ variables,
  CPU only, `devices` XLA host devices."""
  out = {k: None for k in os.environ if k.startswith(("JAX_", "SLURM_", "OMPI_"))}
  out["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  out["JAX_PLATFORMS"] = "cpu"
  return out


def spawn(*args: str, devices: int = 1) -> subprocess.Popen:
  """`python *args` in ROOT, started (not waited for), `devices` XLA host devices."""
  return subprocess.Popen(
    [sys.executable, *args],
    cwd=ROOT,
    env=child_env(env(devices)),
    text=True,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
  )


def start(args, n: int, port_: int, coordinator_flag: str = "--coordinator_address"):
  """n processes of `python *args` with jax.distributed on 127.0.0.1:port_, 1 device each."""
  return [
    spawn(
      *args, f"{coordinator_flag}=127.0.0.1:{port_}", f"--num_processes={n}", f"--process_id={i}"
    )
    for i in range(n)
  ]


def wait(procs, timeout: float = TIMEOUT):
  """(stdout, stderr) of each process; all must exit with 0 (the others are killed on a failure)."""
  try:
    outs = [p.communicate(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert all(p.returncode == 0 for p in procs), [o[1][-3000:] for o in outs]
  return outs


def jobs(two: bool) -> list[dict]:
  """The trainings of `launch` (module docstring), for the 2 processes (two) or the reference."""
  out = [{"name": "fed", "device": not two}]
  out += [{"name": name, "device": True, "num_epochs": 1, "layout": name} for name in LAYOUT_NAMES]
  if not two:
    out.append({"name": "kill_ref", "device": True, "num_epochs": 8})
  return out


def launch(root) -> dict:
  """Runs the module docstring's processes; {"one": (its stdout, stderr), "two": [(stdout, stderr)
  of process 0, of process 1], "root": root}."""
  one = spawn(
    *WORKER, f"--out={os.path.join(root, 'one')}", f"--jobs={json.dumps(jobs(False))}", devices=2
  )
  two = start(
    [*WORKER, f"--out={os.path.join(root, 'two')}", f"--jobs={json.dumps(jobs(True))}"],
    2,
    port(),
    coordinator_flag="--coordinator",
  )
  outs = wait([one, *two], timeout=2 * TIMEOUT)
  return {"one": outs[0], "two": outs[1:], "root": root}


def params(out):
  """The final params tests/multihost_worker.py wrote in `out` (its flattened leaves)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  with np.load(os.path.join(out, "params.npz")) as z:
    return [z[k] for k in sorted(z.files)]


def feed_log(out, pid):
  with open(os.path.join(out, f"feed_{pid}.json")) as f:
    return json.load(f)
