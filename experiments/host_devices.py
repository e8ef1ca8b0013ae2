"""One XLA host (CPU) device per core, for the binaries: a process-wide setting, never the library's.

On CPU, XLA runs each convolution on one core of one device; the multi-seed engine
(`rl_align.train`) shards its seeds over the devices, so a binary exposes one host device per core
before jax initializes its backends (at the first device use, not at `import jax`)::

    from experiments import host_devices
    host_devices.expose_host_cores()      # experiments.cli.run_main does this for every binary

The user's XLA_FLAGS win: nothing changes when they already set
`--xla_force_host_platform_device_count` (e.g. `XLA_FLAGS=--xla_force_host_platform_device_count=1`
for one device), nor once the backends are initialized.  Only the CPU platform is affected.
"""

import os
import sys

FLAG = "xla_force_host_platform_device_count"


def backends_initialized() -> bool:
  """Whether jax already initialized its backends (then XLA_FLAGS is read and a change is moot)."""
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # jax moved it: assume the worst, change nothing
    return True


def host_cores() -> int:
  """The cores this process may run on (its CPU affinity where the OS tells it)."""
  if hasattr(os, "sched_getaffinity"):
    return max(1, len(os.sched_getaffinity(0)))
  return max(1, os.cpu_count() or 1)


def expose_host_cores(count: int | None = None) -> bool:
  """Adds `--xla_force_host_platform_device_count=count` (default: one per core) to XLA_FLAGS
  unless the user set that flag or jax's backends are already up.  True when XLA_FLAGS changed."""
  flags = os.environ.get("XLA_FLAGS", "")
  if FLAG in flags or backends_initialized():
    return False
  os.environ["XLA_FLAGS"] = f"{flags} --{FLAG}={count or host_cores()}".strip()
  return True
