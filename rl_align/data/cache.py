"""A disk cache for arrays that are slow to derive but fully determined by their inputs.

    from rl_align.data import cache
    arrays = cache.cached_arrays("photos", {"short_side": 256, ...}, compute)   # dict of arrays

The embedded photos (`embedded.photo_stack`) take about 3 s of every process to decode and resize;
their result depends only on the resize arguments and the versions of the libraries that decode
and resize them, so it is kept on disk, named by a hash of that key.  A file that cannot be read
is derived again and rewritten; a folder that cannot be written only costs the time saved.

Where: $RL_ALIGN_CACHE_DIR, else $XDG_CACHE_HOME/rl_align, else ~/.cache/rl_align;
RL_ALIGN_CACHE_DIR="" turns the cache off.
"""

import hashlib
import json
import os
import tempfile
import zipfile
from typing import Callable

import numpy as np

ENV = "RL_ALIGN_CACHE_DIR"


def cache_dir() -> str | None:
  """The cache folder (module docstring), or None when the cache is off."""
  if ENV in os.environ:
    return os.environ[ENV] or None
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "rl_align")


def path(name: str, key: dict) -> str | None:
  """The file of `name` under `key` (any JSON-serializable dict), or None when the cache is off."""
  root = cache_dir()
  if root is None:
    return None
  digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  return os.path.join(root, f"{name}_{digest}.npz")


def _read(file: str) -> dict[str, np.ndarray] | None:
  try:
    with np.load(file, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile):
    return None  # absent, cut short by a crash, or not an npz: derive it again


def _write(file: str, arrays: dict[str, np.ndarray]) -> None:
  """Written whole to a temporary file, then renamed: readers never see a partial file, and
  processes that write the same entry at once leave one complete copy."""
  try:
    os.makedirs(os.path.dirname(file), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(file), suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, file)
  except OSError:
    pass  # a read-only or full disk: the arrays are still returned, only not kept


def cached_arrays(
  name: str, key: dict, compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
  """compute()'s arrays, read from the cache when an entry for (name, key) exists, else computed
  and stored.  `key` must hold everything the result depends on (arguments, library versions)."""
  file = path(name, key)
  arrays = _read(file) if file else None
  if arrays is None:
    arrays = {k: np.asarray(v) for k, v in compute().items()}
    if file:
      _write(file, arrays)
  return arrays
