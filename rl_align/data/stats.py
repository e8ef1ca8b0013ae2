"""Checks and per-channel statistics of inputs, streamed so a large split never needs a float64 copy.

from rl_align.data import stats
stats.check_finite(x, "x")                    # DataError naming the NaN / inf examples
mean, std = stats.channel_stats(x)            # float64 per channel; x may be a Source
xs = stats.standardize(x, mean, std)          # float32
"""

from typing import Optional

import numpy as np

from rl_align import errors
from rl_align.data.core import CHUNK_BYTES, Source, check_count, to_unit_float


def _chunk_rows(shape) -> int:
  row_bytes = 8 * max(1, int(np.prod(shape[1:])))
  return max(1, CHUNK_BYTES // row_bytes)


def check_finite(x, name: str = "x") -> None:
  """Raises DataError if `x` holds NaN or inf, saying how many, in which examples."""
  x = np.asarray(x)
  if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.complexfloating):
    return
  flat = x.reshape(len(x), -1) if x.ndim else x.reshape(1, 1)
  n_nan = n_inf = 0
  bad_rows = []
  step = _chunk_rows(flat.shape)
  for s in range(0, len(flat), step):
    part = flat[s : s + step]
    nan, inf = np.isnan(part), np.isinf(part)
    n_nan += int(nan.sum())
    n_inf += int(inf.sum())
    bad_rows.append(s + np.flatnonzero((nan | inf).any(axis=1)))
  if n_nan or n_inf:
    rows = np.concatenate(bad_rows)
    raise errors.DataError(
      f"{name} has {n_nan} NaN and {n_inf} inf values in {rows.size} of {len(flat)} examples "
      f"(first bad examples at index {rows[:5].tolist()}). Fix: inspect {name}[{rows[0]}] and "
      f"the step that produced it (decoding, a division by zero, a diverged model), or drop "
      "those examples."
    )


def channel_stats(x, max_examples: Optional[int] = None) -> tuple:
  """Per-channel (last axis) mean and std (ddof=0) of `x` in float64, streamed over chunks.

  `x` is an array or a `Source` (read chunk by chunk, uint8 mapped to [0, 1] as `load` does; the
  same chunks as for the array, so the same numbers bit for bit).  Chunks of examples are reduced
  in float64 and merged (Chan et al.), so a 50000x32x32x3 float32 array never needs a float64
  copy.  `max_examples` uses only the first examples (a random sample when x is a shuffled split).
  """
  if isinstance(x, Source):
    n, shape = len(x), (len(x),) + tuple(x.example_shape)
    rows = lambda s, e: to_unit_float(x.take(np.arange(s, e))[0])
  else:
    x = np.asarray(x)
    n, shape = (len(x) if x.ndim else 0), x.shape
    rows = lambda s, e: x[s:e]
  if max_examples is not None:
    check_count("channel_stats: max_examples", max_examples)
    n = min(n, max_examples)
  if len(shape) < 2 or n == 0:
    raise errors.DataError(
      f"channel_stats needs a non-empty [N, ..., C] array, got shape {shape}. "
      "Fix: pass the training inputs."
    )
  c = shape[-1]
  count, mean, m2 = 0, np.zeros(c), np.zeros(c)
  step = _chunk_rows(shape)
  for s in range(0, n, step):
    part = rows(s, min(n, s + step)).reshape(-1, c).astype(np.float64)
    k = len(part)
    pm = part.mean(axis=0)
    pm2 = ((part - pm) ** 2).sum(axis=0)
    delta = pm - mean
    total = count + k
    mean = mean + delta * (k / total)
    m2 = m2 + pm2 + delta**2 * (count * k / total)
    count = total
  return mean, np.sqrt(m2 / count)


def standardize(x, mean, std) -> np.ndarray:
  """(x - mean) / std per channel (last axis), as float32."""
  x = np.asarray(x)
  mean = np.asarray(mean, np.float64).reshape(-1)
  std = np.asarray(std, np.float64).reshape(-1)
  c = x.shape[-1]
  if mean.shape != (c,) or std.shape != (c,):
    raise errors.DataError(
      f"standardize: x has {c} channels but mean/std have shapes {mean.shape}/{std.shape}. "
      "Fix: compute them with channel_stats on data with the same channels."
    )
  bad = np.flatnonzero(~(std > 0))
  if bad.size:
    raise errors.DataError(
      f"standardize: channel {bad[0]} is constant; its std is {std[bad[0]]} "
      f"(channels with std <= 0: {bad.tolist()}). Fix: drop that channel, or compute the "
      "statistics on more varied data."
    )
  return (
    (x.astype(np.float32, copy=False) - mean.astype(np.float32)) / std.astype(np.float32)
  ).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------
# Splits and labels.
