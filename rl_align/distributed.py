"""Several processes (hosts) with JAX's own runtime: `jax.distributed`.

Every experiment binary calls `initialize` before anything touches a device::

    from rl_align import distributed
    distributed.initialize("10.0.0.1:12345", num_processes=4, process_id=2)   # explicit
    distributed.initialize()   # from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID

With none of them given or set, the run is single-process, unless JAX's own cluster detection
applies (a SLURM step or an Open MPI job with more than one task), in which case
`jax.distributed.initialize()` finds the coordinator itself.  On CPU the collectives are gloo.

After it, `jax.devices()` lists the devices of every process: the engine (`rl_align.train`)
shards seeds (and packed sweep members) over all of them, and process 0 alone writes results.
"""

import os

import jax

from rl_align import errors

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _cluster_tasks() -> int:
  """Tasks of a SLURM step / Open MPI job that JAX's cluster detection would pick up (0: none)."""
  for var in ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if os.environ.get(var, "").isdigit():
      return int(os.environ[var])
  return 0


def resolve(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> dict | None:
  """The arguments for `jax.distributed.initialize`, or None for a single-process run.

  Explicit values win over the environment.  Raises ConfigError on an incomplete or invalid set.
  """
  env = {k: os.environ.get(k) or None for k in ENV}
  addr = coordinator_address or env["JAX_COORDINATOR_ADDRESS"]
  nproc = num_processes if num_processes is not None else env["JAX_NUM_PROCESSES"]
  pid = process_id if process_id is not None else env["JAX_PROCESS_ID"]
  if addr is None and nproc is None and pid is None:
    return {} if _cluster_tasks() > 1 else None
  try:
    nproc, pid = int(nproc), int(pid)
  except (TypeError, ValueError):
    raise errors.ConfigError(
      f"a multi-process run needs --coordinator_address=HOST:PORT, --num_processes=N and "
      f"--process_id=I (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); got "
      f"address={addr!r}, num_processes={nproc!r}, process_id={pid!r}."
    ) from None
  if addr is None or ":" not in str(addr):
    raise errors.ConfigError(
      f"--coordinator_address must be HOST:PORT, got {addr!r}. "
      "Fix: e.g. --coordinator_address=127.0.0.1:23456."
    )
  if nproc < 1 or not 0 <= pid < nproc:
    raise errors.ConfigError(
      f"--process_id={pid} must be in [0, --num_processes={nproc}). "
      "Fix: number the processes 0 .. N-1."
    )
  return {"coordinator_address": str(addr), "num_processes": nproc, "process_id": pid}


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  timeout_s: int | None = None,
) -> bool:
  """Starts jax.distributed when asked to (see the module docstring); True if it did."""
  kw = resolve(coordinator_address, num_processes, process_id)
  if kw is None or jax.distributed.is_initialized():
    return False
  if kw.get("num_processes") == 1:
    return False
  if timeout_s is not None:
    kw["initialization_timeout"] = int(timeout_s)
  jax.distributed.initialize(**kw)
  return True


def is_main() -> bool:
  """True on the process that writes results (process 0)."""
  return jax.process_index() == 0
