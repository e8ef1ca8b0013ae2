"""Where a run records itself: its workdir's lock, config.json, run.json and metric writers.

    from rl_align import workdir
    with workdir.Lock("/tmp/run"):                 # one run per workdir (process 0 holds it)
      workdir.check_config(config, "/tmp/run")     # config.json; a resume must match it
      record = workdir.RunRecord("/tmp/run")       # run.json: machine, command, status, accounting
      record.start()
      ...
      record.finish("finished", ledger)
    writer = workdir.writer("/tmp/run")            # metrics.jsonl + TensorBoard (process 0)

- **Lock**: an advisory `fcntl.flock` on WORKDIR/.lock, held by process 0 for the run; a second
  run on the same workdir is refused with one line naming the holder (pid, host, command, start).
  The kernel releases the lock when its process dies, so a crashed run's lock never blocks.
- **config.json**: written only after the caller validated the config; a resume with another
  config is refused naming every differing field with both values, except fields that cannot
  change results (`RUN_ONLY`: checkpoint and logging cadence, the host pipeline's threads), which
  may change on resume.
- **run.json** (`RunRecord`): the machine, the command line, start / end, wall seconds, the status
  ("running", "finished", "interrupted at step N of PHASE", "error: ...", "failed: ...") and the
  accounting of the training FLOPs.  Every earlier invocation is kept under `earlier_runs`.
- **writer**: the `metric_writers` of a workdir: metrics.jsonl and one TensorBoard run per member on
  process 0; the rows alone (read back on resume) on the others.
"""

import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Any, Mapping, Sequence

from rl_align import errors
from rl_align import flops as flops_lib
from rl_align import metric_writers
from rl_align import results

CONFIG, RUN_RECORD, METRICS, LOCK = "config.json", "run.json", "metrics.jsonl", ".lock"

# Config fields (dotted paths; a trailing ".*" covers a subtree; "*." any prefix) that cannot
# change what a run computes: they may differ on resume.
RUN_ONLY = (
  "*.checkpoint_every_secs",
  "*.log_every_steps",
  "data.pipeline.*",
  "data.download",
  "f_only.data.pipeline.*",
)


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _process_index() -> int:
  import jax  # pylint: disable=g-import-not-at-top

  return jax.process_index()


def ensure(path: str) -> str:
  """Creates the workdir folder; an unusable path is one WorkdirError naming it and the fix."""
  try:
    os.makedirs(path, exist_ok=True)
  except FileExistsError:
    raise errors.WorkdirError(
      f"--workdir {path} exists and is not a folder. Fix: pass a folder "
      "path (a new one, or the workdir of the run to resume)."
    ) from None
  except OSError as e:
    raise errors.WorkdirError(
      f"--workdir {path} cannot be created ({e.strerror}). Fix: pass a folder you can write to."
    ) from None
  if not os.path.isdir(path):
    raise errors.WorkdirError(f"--workdir {path} is not a folder. Fix: pass a folder path.")
  probe = os.path.join(path, f".write-test-{os.getpid()}")
  try:
    with open(probe, "w", encoding="utf-8"):
      pass
    os.remove(probe)
  except OSError as e:
    why = "read-only file system" if e.errno == errno.EROFS else e.strerror
    raise errors.WorkdirError(
      f"--workdir {path} is not writable ({why}). Fix: pass a folder you "
      "can write to, or copy the workdir there to resume it."
    ) from None
  return path


# ----------------------------------------------------------------------------------------------
# One run per workdir.


class Lock:
  """The workdir's advisory lock (a context manager; `active` False: a no-op, e.g. on processes
  other than 0)."""

  def __init__(self, path: str, active: bool | None = None, argv: Sequence[str] | None = None):
    self.path = path
    self.active = _process_index() == 0 if active is None else active
    self.argv = list(sys.argv if argv is None else argv)
    self.fd: int | None = None

  def __enter__(self) -> "Lock":
    if not self.active:
      return self
    ensure(self.path)
    fd = os.open(os.path.join(self.path, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = self._holder(fd)
      os.close(fd)
      raise errors.WorkdirError(
        f"{self.path} is in use by another run ({holder}). Fix: wait for it to finish or stop "
        "it, or pass another --workdir; a run that died holds no lock."
      ) from None
    info = {"pid": os.getpid(), "host": socket.gethostname(), "start": _now(), "argv": self.argv}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    self.fd = fd
    return self

  @staticmethod
  def _holder(fd: int) -> str:
    try:
      info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
      info = {}
    if not info:
      return "holder unknown"
    cmd = " ".join(str(a) for a in info.get("argv", []))[:120]
    return f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('start')}: {cmd}"

  def __exit__(self, *exc) -> None:
    if self.fd is not None:
      fcntl.flock(self.fd, fcntl.LOCK_UN)
      os.close(self.fd)
      self.fd = None


# ----------------------------------------------------------------------------------------------
# config.json.


def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a.b.c": leaf} of a nested dict (lists are leaves)."""
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, Mapping) and v:
      out.update(flat(v, key + "."))
    else:
      out[key] = v
  return out


def run_only(field: str) -> bool:
  """Whether a dotted config field is one of RUN_ONLY."""
  for pat in RUN_ONLY:
    if pat.startswith("*."):
      if field == pat[2:] or field.endswith(pat[1:]):
        return True
    elif pat.endswith(".*"):
      if field.startswith(pat[:-1]):
        return True
    elif field == pat:
      return True
  return False


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
  """(field, old value, new value) of every leaf that differs, run-only fields left out."""
  a, b = flat(old), flat(new)
  missing = object()
  out = []
  for k in sorted(set(a) | set(b)):
    va, vb = a.get(k, missing), b.get(k, missing)
    if va != vb and not run_only(k):
      out.append((k, None if va is missing else va, None if vb is missing else vb))
  return out


def computed(path: str) -> bool:
  """Whether the workdir (or a folder in it, e.g. a panel's) holds anything a run computed,
  beyond config, run record and lock."""
  try:
    names = os.listdir(path)
  except OSError:
    return False
  for n in names:
    full = os.path.join(path, n)
    if os.path.isdir(full):
      if computed(full):
        return True
    elif n not in (CONFIG, RUN_RECORD, LOCK) and not n.startswith("."):
      return True
  return False


def check_config(config, path: str) -> None:
  """Writes path/config.json; refuses to resume a workdir that holds a different config (naming
  each field that differs, with both values).  Call it after the config is validated."""
  new = json.loads(json.dumps(results.to_jsonable(config)))
  old = results.read_json(path, CONFIG)
  if old is not None and not computed(path):
    old = None  # a run that stopped before computing anything (e.g. a rejected config)
  if old is not None:
    diff = config_diff(old, new)
    if diff:
      shown = "; ".join(f"{k}: {json.dumps(a)} there, {json.dumps(b)} now" for k, a, b in diff[:6])
      more = f" (and {len(diff) - 6} more)" if len(diff) > 6 else ""
      raise errors.ConfigError(
        f"{path} already holds a run with another config: {shown}{more}. Fix: pass a new "
        "--workdir, or rerun with the config of that run to resume it."
      )
  results.write_json(path, CONFIG, new)


# ----------------------------------------------------------------------------------------------
# run.json.


class RunRecord:
  """WORKDIR/run.json: machine, command line, start / end time, wall seconds, status, accounting.

  A rerun (resume) on the same workdir keeps the earlier records under `earlier_runs`.  The
  process facts are read when it is made, so `finish` never touches JAX (it may run while the
  interpreter shuts down).
  """

  def __init__(self, path: str, argv: Sequence[str] | None = None):
    import jax  # pylint: disable=g-import-not-at-top

    self.path = path
    self.active = jax.process_index() == 0
    self.processes = jax.process_count()
    self.t0 = time.time()
    self.rec = {
      "argv": list(sys.argv if argv is None else argv),
      "cwd": os.getcwd(),
      "start": _now(),
      "end": None,
      "wall_s": None,
      "status": "running",
    }

  def start(self, machine: Mapping[str, Any]) -> None:
    """Writes the record (status running) with `machine` (`rl_align.machine.describe`)."""
    if not self.active:
      return
    old = results.read_json(self.path, RUN_RECORD) or {}
    earlier = old.pop("earlier_runs", [])
    self.rec["machine"] = dict(machine)
    self.rec["earlier_runs"] = earlier + ([old] if old else [])
    results.write_json(self.path, RUN_RECORD, self.rec)

  def note(self, **fields) -> None:
    """Adds fields to the record (e.g. the data files a run read) and writes it."""
    self.rec.update(fields)
    if self.active and "machine" in self.rec:
      results.write_json(self.path, RUN_RECORD, self.rec)

  def finish(self, status: str, ledger: flops_lib.Ledger | None = None) -> None:
    if not self.active or "machine" not in self.rec:
      return
    wall = time.time() - self.t0
    self.rec.update(end=_now(), wall_s=round(wall, 2), status=status)
    if ledger is not None:
      self.rec["accounting"] = accounting(ledger, wall, self.rec["machine"], self.processes)
    results.write_json(self.path, RUN_RECORD, self.rec)


def accounting(
  ledger: flops_lib.Ledger, wall_s: float, mach: Mapping[str, Any], processes: int = 1
) -> dict:
  """run.json's accounting: the ledger's FLOPs (training steps' matmul/conv FLOPs of the engine
  calls run), the rate FLOPs / wall_s and its fraction of the machine's measured fp32 matmul peak
  (x the process count in a multi-process run: every process measured its own machine); `calls`
  sums the ledger's records by call name."""
  peak = mach.get("fp32_matmul_gflops")
  if peak is not None:
    peak *= processes
  out = flops_lib.accounting(ledger.total, wall_s, peak, ledger.seconds)
  calls: dict = {}
  for r in ledger.records:
    c = calls.setdefault(r["name"], {"calls": 0, "flops": 0.0, "model_steps": 0, "seconds": {}})
    c["calls"] += 1
    c["flops"] += r["flops"]
    c["model_steps"] += r["steps"] * r["members"]
    for k, v in r.get("seconds", {}).items():
      c["seconds"][k] = c["seconds"].get(k, 0.0) + v
  out.update(
    counted="training steps' matmul/conv FLOPs (evaluations and probes not counted)", calls=calls
  )
  return out


# ----------------------------------------------------------------------------------------------
# Metric writers.


def writer(path: str | None, tensorboard: bool = True) -> metric_writers.MetricWriter:
  """The metric writers of a workdir: metrics.jsonl (written by process 0, read back by every
  process) and, with `tensorboard`, one TensorBoard run per member (process 0)."""
  if not path:
    return metric_writers.NoopWriter()
  main = _process_index() == 0
  rows = metric_writers.JsonlWriter(os.path.join(path, METRICS), writes=main)
  if not (tensorboard and main):
    return rows
  from rl_align import tensorboard as tb  # pylint: disable=g-import-not-at-top

  return metric_writers.MultiWriter([rows, tb.TensorBoardWriter(path)])
