"""rl_align: what neural networks learn when trained with random labels (Maennel et al. 2020).

Library modules are pure (no flags, no I/O side effects beyond the workdir helpers in
``rl_align.results``) and importable from Colab::

    from rl_align import data, covariance, alignment
    ds = data.load("gaussian", n=10_000, stds=[0.1 * i for i in range(1, 31)])
    mean, cov_x = covariance.data_covariance(ds.x)

On CPU, XLA runs each convolution on one core of one device.  Unless the user already configured
XLA_FLAGS, importing rl_align before jax initializes its backends exposes one XLA host device per core so that the multi-seed
engine (``rl_align.train``) can shard seeds over all cores.  This only affects the CPU platform.
"""
import os as _os
import sys as _sys


def _backends_initialized() -> bool:
  if "jax" not in _sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    return True


def _expose_host_cores() -> None:
  if _backends_initialized() or "xla_force_host_platform_device_count" in _os.environ.get("XLA_FLAGS", ""):
    return
  if _os.environ.get("RL_ALIGN_NO_HOST_DEVICES"):
    return
  n = len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity") else (_os.cpu_count() or 1)
  flags = _os.environ.get("XLA_FLAGS", "")
  _os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={max(1, n)}".strip()


_expose_host_cores()

__version__ = "0.1.0"
