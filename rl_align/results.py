"""Workdir I/O: atomic JSON / NPZ writes, metrics as JSON lines, config snapshots.

Every write goes to a temporary file in the same folder and is renamed into place, so a crash never
leaves a half-written result and never destroys one written before; files are readable by the
group and others as any file the user creates (0644 under the usual umask 022).  A JSON file that
does not parse is one `errors.WorkdirError` naming it and the fix::

    from rl_align import results
    results.write_json(workdir, "results.json", {"f": [[0.18, 0.2]]})
    results.read_json(workdir, "results.json")

Metrics rows (metrics.jsonl) are written by `rl_align.metric_writers`.
"""

import json
import math
import os
import tempfile
from typing import Any, Mapping

import numpy as np

from rl_align import errors


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file


def to_jsonable(obj: Any) -> Any:
  """numpy / jax scalars and arrays -> plain Python; non-finite floats -> None (valid JSON)."""
  if isinstance(obj, Mapping):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if hasattr(obj, "to_dict"):  # ml_collections.ConfigDict
    return to_jsonable(obj.to_dict())
  if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
    arr = np.asarray(obj)
    return to_jsonable(arr.tolist()) if arr.ndim else to_jsonable(arr.item())
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, (bool, int, str)) or obj is None:
    return obj
  return str(obj)


def writes_here() -> bool:
  """False on every process but process 0 of a multi-process run: process 0 alone writes results,
  metrics and plots (the others compute the same values; `rl_align.distributed`)."""
  import jax  # pylint: disable=g-import-not-at-top

  return jax.process_index() == 0


def _atomic_write_bytes(path: str, data: bytes) -> None:
  if not writes_here():
    return
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-" + os.path.basename(path))
  try:
    os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(workdir: str, name: str, obj: Any) -> str:
  """Atomically writes `obj` (numpy-aware) as indented JSON to workdir/name; returns the path."""
  path = os.path.join(workdir, name)
  _atomic_write_bytes(path, (json.dumps(to_jsonable(obj), indent=1) + "\n").encode())
  return path


def write_text(workdir: str, name: str, text: str) -> str:
  """Atomically writes text (e.g. CSV) to workdir/name; returns the path."""
  path = os.path.join(workdir, name)
  _atomic_write_bytes(path, text.encode())
  return path


def read_json(workdir: str, name: str, default: Any = None) -> Any:
  """workdir/name parsed, `default` when it does not exist; a file that is not JSON (e.g. cut
  short by a full disk) is a WorkdirError naming it."""
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return default
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise errors.WorkdirError(
      f"{path} is damaged (not valid JSON: {e}). Fix: delete it and rerun (a run rewrites its "
      "own JSON files; config.json is rewritten from --config), or pass a new --workdir."
    ) from None


def write_npz(workdir: str, name: str, arrays: Mapping[str, Any]) -> str:
  """Atomically writes a dict of arrays as an .npz file."""
  import io

  buf = io.BytesIO()
  np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
  path = os.path.join(workdir, name)
  _atomic_write_bytes(path, buf.getvalue())
  return path


def read_npz(workdir: str, name: str) -> dict[str, np.ndarray] | None:
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return None
  with np.load(path) as z:
    return {k: z[k] for k in z.files}
