"""Disjoint splits from one seeded permutation (random labels: `rl_align.seeds.random_labels`,
the one label draw of rl_align).

from rl_align.data import splits
idx = splits.split_indices(50_000, {"upstream": 20_000, "downstream": 25_000}, seed=0)
"""

from typing import Mapping

import numpy as np

from rl_align import errors
from rl_align.data.core import check_count


def split_indices(n: int, sizes: Mapping[str, int], seed: int) -> dict:
  """Disjoint index sets of range(n) cut in the given order from ONE seeded permutation.

  E.g. split_indices(50000, {"upstream": 20000, "downstream": 25000, "test": 5000}, seed=0).
  Each set is in permuted (random) order; a part of the permutation may stay unused.
  """
  check_count("split_indices: n", n)
  for key, size in sizes.items():
    check_count(f"split size {key!r}", size)
  total = sum(sizes.values())
  if total > n:
    raise errors.ConfigError(
      f"split sizes {dict(sizes)} sum to {total} > {n} available examples. "
      "Fix: shrink the splits so that they fit."
    )
  perm = np.random.default_rng(seed).permutation(n)
  out, start = {}, 0
  for key, size in sizes.items():
    out[key] = perm[start : start + size]
    start += size
  return out
