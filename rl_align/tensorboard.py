"""TensorBoard event files next to metrics.jsonl: one run per member, so `tensorboard --logdir
WORKDIR` shows every member's curves (and, for a sweep, every point's: each point has its workdir).

Layout (`run_dir`)::

    WORKDIR/tensorboard/<phase>/member_<seed id>/events.out.tfevents.<time>.<host>.<pid>.<n>

`TensorBoardWriter` is a `rl_align.metric_writers.MetricWriter`: the engine reports its rows to it
(given by the run's workdir, `rl_align.workdir.writer`).  Scalars: every numeric field of a
metrics row (loss, batch_accuracy, <eval>_loss, <eval>_accuracy, probe/*, epoch, alive) at the
row's step.  The eigenvalue-map runner adds, per snapshot step, f of every eigen-direction as
scalars `f/sigma_<i>` (i = 0 is the largest eigenvalue; at most 64 log-spaced directions when
d > 64) and, at up to 5 of the snapshot steps (`image_steps`), the curve f(sigma) as an image
`f_of_sigma` (`write_f`, through the writer).

Writing: tensorboardX's synchronous `EventsWriter` (no thread, no queue), one file per run per
process, kept open (at most `MAX_OPEN`; the least recently used is closed) and flushed after every
write; process 0 only (`rl_align.workdir.writer` gives the other processes none).
Resume: the first rows a process writes to a run start with a SessionLog START at their step, so
TensorBoard's Python loader drops the points the crashed attempt wrote after its last checkpoint
(the Rust data server keeps both: the curve then shows those steps twice).  f is written after
training, so a rerun of a finished run writes its f points again at the same steps.
"""

import collections
import itertools
import os
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2
from tensorboardX.proto import summary_pb2

from rl_align import metric_writers

FOLDER = "tensorboard"
MAX_OPEN = 64  # event files kept open per process (a sweep can have many runs)
MAX_F_SCALARS = 64  # f/sigma_<i> scalars per snapshot (log-spaced directions beyond)
MAX_F_IMAGES = 5  # f(sigma) images per member (`image_steps`): each is a matplotlib render
_NOT_SCALARS = ("phase", "part", "step", "seed")

_writers: "collections.OrderedDict[str, EventsWriter]" = collections.OrderedDict()
_started: set[str] = set()  # runs this process has written rows to
_last_step: dict[str, int] = {}
_counter = itertools.count()


def run_dir(workdir: str, phase: str, member: int | None) -> str:
  """The run folder of one member of one phase (the phase's folder when member is None)."""
  d = os.path.join(workdir, FOLDER, str(phase))
  return d if member is None else os.path.join(d, f"member_{int(member)}")


def _writer(path: str) -> EventsWriter:
  w = _writers.pop(path, None)
  if w is None:
    os.makedirs(path, exist_ok=True)
    w = EventsWriter(os.path.join(path, "events"), f".{os.getpid()}.{next(_counter)}")
  _writers[path] = w  # most recently used last
  while len(_writers) > MAX_OPEN:
    _writers.popitem(last=False)[1].close()
  return w


def _write(path: str, events: Sequence[event_pb2.Event]) -> None:
  w = _writer(path)
  for e in events:
    w.write_event(e)
  w.flush()


def _scalar_event(step: int, scalars: Mapping[str, float]) -> event_pb2.Event:
  values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
  return event_pb2.Event(
    wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)
  )


def _as_float(v: Any) -> float | None:
  if v is None or isinstance(v, str):
    return None
  a = np.asarray(v)
  if a.size != 1 or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
    return None
  return float(a.reshape(()))


class TensorBoardWriter(metric_writers.MetricWriter):
  """One TensorBoard run per (phase, member) under WORKDIR/tensorboard (module docstring)."""

  wants_images = True

  def __init__(self, workdir: str):
    self.workdir = workdir

  def write_rows(self, rows):
    write_rows(self.workdir, rows)

  def write_scalars(self, phase, step, scalars):
    for sid, values in scalars.items():
      v = [summary_pb2.Summary.Value(tag=k, simple_value=float(x)) for k, x in values.items()]
      _write(run_dir(self.workdir, phase, sid), [_event(step, v)])

  def write_images(self, phase, step, images):
    for sid, tags in images.items():
      v = [
        summary_pb2.Summary.Value(
          tag=k,
          image=summary_pb2.Summary.Image(
            height=h, width=w, colorspace=4, encoded_image_string=png
          ),
        )
        for k, (png, h, w) in tags.items()
      ]
      _write(run_dir(self.workdir, phase, sid), [_event(step, v)])

  def flush(self):
    for w in _writers.values():
      w.flush()

  def close(self):
    self.flush()


def _event(step: int, values) -> event_pb2.Event:
  return event_pb2.Event(
    wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)
  )


def write_rows(workdir: str, rows: Iterable[Mapping[str, Any]]) -> None:
  """Writes metrics rows ({"phase", "step", "seed", metric: value, ...}) as scalars, one run per
  (phase, seed).  Non-numeric fields are skipped; non-finite values are written as they are."""
  runs: dict[str, list] = collections.defaultdict(list)
  for r in rows:
    phase = r.get("phase", "train")
    path = run_dir(workdir, f"{phase}/{r['part']}" if r.get("part") else phase, r.get("seed"))
    scalars = {
      k: f for k, v in r.items() if k not in _NOT_SCALARS if (f := _as_float(v)) is not None
    }
    runs[path].append(_scalar_event(int(r["step"]), scalars))
  for path, events in runs.items():
    first = min(e.step for e in events)
    if path not in _started or first <= _last_step.get(path, -1):
      start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
      events = [event_pb2.Event(wall_time=time.time(), step=first, session_log=start)] + events
      _started.add(path)
    _last_step[path] = max(e.step for e in events)
    _write(path, events)


def f_directions(d: int) -> np.ndarray:
  """The eigen-directions written as f/sigma_<i>: all when d <= MAX_F_SCALARS, else log-spaced."""
  if d <= MAX_F_SCALARS:
    return np.arange(d)
  return np.unique(np.round(np.geomspace(1, d, MAX_F_SCALARS)).astype(int) - 1)


def image_steps(steps: Sequence[int], n: int = MAX_F_IMAGES) -> list[int]:
  """The snapshot steps that also get the image f_of_sigma: the first, the last and evenly spaced
  ones between, at most n.  Rendering a PNG per member per snapshot took most of a tiny Fig 20
  run's time (cProfile: 62%); the scalars f/sigma_<i> keep every snapshot."""
  steps = sorted(steps)
  if len(steps) <= n:
    return steps
  return [steps[int(round(i))] for i in np.linspace(0, len(steps) - 1, n)]


def f_tag(i: int, d: int) -> str:
  return f"f/sigma_{i:0{len(str(d - 1))}d}"


def _f_png(sigma: np.ndarray, f: np.ndarray, title: str) -> tuple[bytes, int, int]:
  """The curve f(sigma) as PNG bytes, height, width (no pyplot: `rl_align.plots.png_bytes`)."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from rl_align import plots  # pylint: disable=g-import-not-at-top

  fig = plots.figure(figsize=(4, 3), dpi=80)
  canvas = FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  ok = (sigma > 0) & np.isfinite(f)
  ax.plot(sigma[ok], f[ok], "o-", ms=3)
  if ok.any() and sigma[ok].max() > 10 * sigma[ok].min():
    ax.set_xscale("log")
    # Major ticks only, labelled plainly: the log axis's minor ticks and mathtext labels would
    # double the cost of an image that every snapshot of every member draws.
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
  ax.set_xlabel("sigma (sqrt of the data eigenvalue)")
  ax.set_ylabel("f(sigma)")
  ax.set_title(title, fontsize=9)
  fig.subplots_adjust(left=0.18, right=0.96, bottom=0.16, top=0.9)  # fixed: no tight layout pass
  data = plots.png_bytes(fig, tight=False)
  w, h = canvas.get_width_height()
  return data, h, w


def write_f(
  writer: metric_writers.MetricWriter,
  phase: str,
  seed_ids: Sequence[int],
  step: int,
  f: np.ndarray,
  sigma: np.ndarray,
  image: bool = True,
) -> None:
  """f [S, d] of the members `seed_ids` at `step`, to `writer`: scalars f/sigma_<i>
  (`f_directions`) and, with `image`, the curve f(sigma) as the image `f_of_sigma`."""
  f, sigma = np.asarray(f, np.float64), np.asarray(sigma, np.float64)
  d = f.shape[1]
  dirs = f_directions(d)
  writer.write_scalars(
    phase, step, {sid: {f_tag(i, d): float(fs[i]) for i in dirs} for sid, fs in zip(seed_ids, f)}
  )
  if image and writer.wants_images:
    writer.write_images(
      phase,
      step,
      {
        sid: {"f_of_sigma": _f_png(sigma, fs, f"member {sid}, step {step}")}
        for sid, fs in zip(seed_ids, f)
      },
    )
