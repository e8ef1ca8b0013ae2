"""Where the engine keeps a training set: on the device, or streamed from the host pipeline.

from rl_align.data import placement
where, line = placement.choose_placement(50_000, (32, 32, 3), num_seeds=8,
                                         device_bytes=placement.device_memory_bytes())
"""

import os

import jax
import numpy as np

from rl_align import errors
from rl_align.data.core import check_count

# The engine's data placements: the training set on the device, or fed from the host input
# pipeline; "auto" picks.
PLACEMENTS = ("auto", "device", "host")
# "auto" keeps the training set on the device while it (plus the per-seed labels) needs less than
# this fraction of one device's memory.
DEVICE_FRACTION = 0.25


def check_placement(requested) -> None:
  """Raises ConfigError naming the allowed values unless `requested` is one of PLACEMENTS."""
  if requested not in PLACEMENTS:
    raise errors.ConfigError(
      f"config.data.placement={requested!r} is unknown. Fix: use one of "
      f"{PLACEMENTS}, e.g. --config.data.placement=host."
    )


def choose_placement(
  n: int, example_shape, num_seeds: int, device_bytes: int, requested: str = "auto"
) -> tuple:
  """(placement, log line): where the engine keeps a training set of n examples.

  `device` keeps x as float32 [n, *example_shape] on every device plus the per-seed labels
  (int32 [num_seeds, n]; counted whole, an upper bound on one device's share); `host` streams
  batches from the host input pipeline.  `auto` picks device when that needs less than
  DEVICE_FRACTION of `device_bytes` (one device's memory), else host.  A forced `device` that does
  not fit at all is a ConfigError with the fix.
  """
  check_placement(requested)
  check_count("choose_placement: n", n)
  check_count("choose_placement: num_seeds", num_seeds)
  if not device_bytes or device_bytes <= 0:
    raise errors.ConfigError(
      f"choose_placement: device_bytes must be > 0, got {device_bytes!r}. "
      "Fix: pass one device's memory in bytes (device_memory_bytes())."
    )
  need = 4 * n * int(np.prod(example_shape, dtype=np.int64)) + 4 * n * num_seeds
  frac = need / device_bytes
  size = f"{n} x {tuple(example_shape)} float32 + {num_seeds} x {n} labels = {need / 2**30:.2f} GiB"
  where = f"{frac:.1%} of {device_bytes / 2**30:.1f} GiB device memory"
  if requested == "device":
    if need > device_bytes:
      raise errors.ConfigError(
        f"config.data.placement='device' but the training set needs {size}, {where}. Fix: "
        "--config.data.placement=host (or auto), or fewer examples / a smaller image_size."
      )
    return "device", f"placement=device (forced): {size}, {where}"
  if requested == "host":
    return "host", f"placement=host (forced): {size} would be {where}"
  if frac < DEVICE_FRACTION:
    return "device", (f"placement=auto -> device: {size} is {where} (< {DEVICE_FRACTION:.0%})")
  return "host", (
    f"placement=auto -> host: {size} would be {where} "
    f"(>= {DEVICE_FRACTION:.0%}); batches come from the host input pipeline"
  )


def device_memory_bytes(device=None) -> int:
  """One device's memory in bytes: the accelerator's `bytes_limit`, or the host's RAM on CPU."""
  device = device or jax.local_devices()[0]
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  # some backends do not implement it
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


# ----------------------------------------------------------------------------------------------
# Checks, statistics, standardization.
