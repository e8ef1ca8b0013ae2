"""Where a run's metrics go: writers with the shape of CommonLoopUtils' `MetricWriter`, that the
engine is given and reports to (it never opens a file of its own, nor imports TensorBoard).

A metrics row is one member's values at one step: ``{"phase", "step", "epoch", "seed", <metric>:
value, ...}`` (and "part" when several calls yielded together share a phase).  Writers:

- `JsonlWriter`: WORKDIR/metrics.jsonl, one row per line, appended and fsynced; it is also the store
  a resumed run reads its rows back from (`read_rows`), and it survives damage: a torn or garbled
  line anywhere is reported with its line number and skipped, the valid rows are kept, and on
  resume only the rows of the resuming phase above the restored step are dropped;
- `rl_align.tensorboard.TensorBoardWriter`: one TensorBoard run per member (scalars and images);
- `MultiWriter` (several at once) and `NoopWriter` (nothing: e.g. a run without a workdir).

In a run of several processes only process 0 writes; the others read the same rows back.

    from rl_align import metric_writers
    w = metric_writers.JsonlWriter("/tmp/run/metrics.jsonl")
    w.write_rows([{"phase": "train", "step": 10, "epoch": 1.0, "seed": 0, "loss": 2.3}])
    w.read_rows("train", max_step=10)          # the rows a run resumed at step 10 keeps
    res = train.train(model, cfg, x, labels, workdir="/tmp/run", writer=w)
"""

import json
import os
from typing import Any, Mapping, Sequence

from absl import logging

from rl_align import results

Row = Mapping[str, Any]


class MetricWriter:
  """The interface (every method a no-op here): what the engine and the runners report."""

  wants_images = False  # whether write_images keeps anything (skip rendering otherwise)

  def write_rows(self, rows: Sequence[Row]) -> None:
    """Appends per-member metrics rows."""

  def write_images(self, phase: str, step: int, images: Mapping[int, Mapping[str, Any]]) -> None:
    """Per member (seed id): {tag: image} at `step` (an image: PNG bytes, height, width)."""

  def write_scalars(
    self, phase: str, step: int, scalars: Mapping[int, Mapping[str, float]]
  ) -> None:
    """Per member (seed id): {tag: value} at `step`, outside the metrics rows (e.g. f/sigma_i)."""

  def read_rows(self, phase: str, max_step: int, part: str = "") -> list[dict]:
    """The rows of `phase` (of its `part`: rows carry "part" when several calls share a phase)
    up to `max_step` that a resumed run keeps ([] if nothing is stored); its rows beyond it are
    dropped from the store."""
    del phase, max_step, part
    return []

  def flush(self) -> None:
    """Makes everything written so far durable."""

  def close(self) -> None:
    """Flushes and releases files."""


class NoopWriter(MetricWriter):
  """Writes and stores nothing."""


class MultiWriter(MetricWriter):
  """Every call to each of `writers`; rows are read back from the first that stores them."""

  def __init__(self, writers: Sequence[MetricWriter]):
    self.writers = list(writers)
    self.wants_images = any(w.wants_images for w in self.writers)

  def write_rows(self, rows):
    for w in self.writers:
      w.write_rows(rows)

  def write_images(self, phase, step, images):
    for w in self.writers:
      w.write_images(phase, step, images)

  def write_scalars(self, phase, step, scalars):
    for w in self.writers:
      w.write_scalars(phase, step, scalars)

  def read_rows(self, phase, max_step, part=""):
    for w in self.writers:
      if isinstance(w, JsonlWriter):
        return w.read_rows(phase, max_step, part)
    return []

  def flush(self):
    for w in self.writers:
      w.flush()

  def close(self):
    for w in self.writers:
      w.close()


def parse_jsonl(path: str) -> tuple[list[dict], list[int]]:
  """(rows, line numbers of the lines that are not one JSON object) of a JSON-lines file; a
  missing file has none of either."""
  rows, bad = [], []
  if not os.path.exists(path):
    return rows, bad
  with open(path, "rb") as f:
    for i, raw in enumerate(f, start=1):
      try:
        row = json.loads(raw.decode("utf-8"))
      except (UnicodeDecodeError, json.JSONDecodeError):
        row = None
      if isinstance(row, dict):
        rows.append(row)
      elif raw.strip():
        bad.append(i)
  return rows, bad


class JsonlWriter(MetricWriter):
  """metrics.jsonl: appended rows (flushed and fsynced per call), read back on resume.

  Args:
    path: the file, e.g. WORKDIR/metrics.jsonl.
    writes: False on the processes that only read (process 0 writes).
  """

  def __init__(self, path: str, writes: bool = True):
    self.path, self.writes = path, writes

  def write_rows(self, rows):
    if not self.writes or not rows:
      return
    folder = os.path.dirname(self.path)
    if folder:
      os.makedirs(folder, exist_ok=True)
    text = "".join(json.dumps(results.to_jsonable(r)) + "\n" for r in rows)
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())

  def read_rows(self, phase, max_step, part=""):
    rows, bad = parse_jsonl(self.path)
    if bad:
      logging.warning(
        "%s: %d damaged line(s) (not one JSON object each: line(s) %s) are skipped; "
        "the %d valid rows are kept.",
        self.path,
        len(bad),
        bad[:10],
        len(rows),
      )
    mine = lambda r: r.get("phase") == phase and r.get("part", "") == part
    drop = [r for r in rows if mine(r) and r.get("step", -1) > max_step]
    if self.writes and (drop or bad):
      keep = [r for r in rows if not (mine(r) and r.get("step", -1) > max_step)]
      results.write_text(
        os.path.dirname(self.path) or ".",
        os.path.basename(self.path),
        "".join(json.dumps(r) + "\n" for r in keep),
      )
      if drop:
        logging.info(
          "%s: %d row(s) of phase %s after step %d (written after the checkpoint the "
          "run resumes from) are dropped.",
          self.path,
          len(drop),
          phase,
          max_step,
        )
    return [r for r in rows if mine(r) and r.get("step", -1) <= max_step]
