"""Workdir I/O: atomic JSON / NPZ writes, metrics as JSON lines, config snapshots.

Every write goes to a temporary file in the same folder and is renamed into place, so a crash never
leaves a half-written result and never destroys one written before::

    from rl_align import results
    results.write_json(workdir, "results.json", {"f": [[0.18, 0.2]]})
    results.append_jsonl(workdir, "metrics.jsonl", [{"step": 10, "seed": 0, "loss": 2.3}])
    rows = results.read_jsonl(workdir, "metrics.jsonl")
"""
import json
import math
import os
import tempfile
from typing import Any, Iterable, Mapping

import numpy as np


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
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


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


def append_jsonl(workdir: str, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
  """Appends one JSON object per line (flushed and fsynced); process 0 only."""
  if not writes_here():
    return
  os.makedirs(workdir, exist_ok=True)
  text = "".join(json.dumps(to_jsonable(r)) + "\n" for r in rows)
  with open(os.path.join(workdir, name), "a") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def read_jsonl(workdir: str, name: str) -> list[dict]:
  """Reads JSON lines, skipping a torn last line left by a crash."""
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return rows


def truncate_jsonl(workdir: str, name: str, max_step: int) -> None:
  """Keeps only rows with row['step'] <= max_step (used when resuming from a checkpoint)."""
  rows = [r for r in read_jsonl(workdir, name) if r.get("step", -1) <= max_step]
  path = os.path.join(workdir, name)
  if os.path.exists(path):
    _atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
