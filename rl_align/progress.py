"""Progress reports with steps/s and ETA for long runs, and where a run's time went.

Usage::

    p = progress.Progress(total_steps=15_800, start_step=0, name="fig20/left")
    ...
    p.report(step, {"loss": 2.29, "acc": 0.13})   # logs "fig20/left step 1200/15800 (7.6%) 250 steps/s ETA 0:01:02 | loss 2.29 acc 0.13"

    phases = progress.Phases()
    with phases("train"):        # the wall time inside, less the XLA compilations made inside
      state = step(state)
    phases.seconds               # {"train": 1.9, "compile": 3.1}
"""

import contextlib
import datetime
import time
from typing import Mapping

from absl import logging
import jax

# What XLA reports for each backend compilation (jax._src.dispatch.BACKEND_COMPILE_EVENT).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compile = {"seconds": 0.0, "listening": False}


def compile_seconds() -> float:
  """Seconds this process has spent in XLA backend compilations since the first call (a
  `jax.monitoring` listener, registered at the first call; a persistent-cache hit costs none)."""
  if not _compile["listening"]:

    def listen(event: str, duration: float, **_) -> None:
      if event == COMPILE_EVENT:
        _compile["seconds"] += duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    _compile["listening"] = True
  return _compile["seconds"]


class Phases:
  """Wall time per named phase, with the XLA compilations made inside any phase counted apart as
  "compile": `with phases("eval"): ...`; `seconds` is {phase: s}.  Time a phase whose device work
  is waited for inside it (`jax.block_until_ready`), or asynchronous dispatch bills it to the
  next phase that waits."""

  def __init__(self, clock=time.perf_counter):
    self.seconds: dict[str, float] = {}
    self._clock = clock

  def add(self, name: str, seconds: float) -> None:
    self.seconds[name] = self.seconds.get(name, 0.0) + seconds

  @contextlib.contextmanager
  def __call__(self, name: str):
    t, c = self._clock(), compile_seconds()
    try:
      yield
    finally:
      compiled = compile_seconds() - c
      self.add(name, self._clock() - t - compiled)
      if compiled:
        self.add("compile", compiled)


def format_eta(seconds: float) -> str:
  if seconds != seconds or seconds == float("inf"):
    return "?"
  return str(datetime.timedelta(seconds=int(round(seconds))))


class Progress:
  """Tracks throughput since the (re)start of a run and logs step, steps/s, ETA and metrics."""

  def __init__(
    self, total_steps: int, start_step: int = 0, name: str = "train", clock=time.perf_counter
  ):
    self.total_steps = int(total_steps)
    self.name = name
    self._clock = clock
    self._t0 = clock()
    self._s0 = int(start_step)
    self.last_line = ""

  def rate(self, step: int) -> float:
    dt = self._clock() - self._t0
    return (step - self._s0) / dt if dt > 0 else float("nan")

  def eta(self, step: int) -> float:
    r = self.rate(step)
    return (self.total_steps - step) / r if r and r == r and r > 0 else float("nan")

  def report(self, step: int, metrics: Mapping[str, float] | None = None) -> str:
    pct = 100.0 * step / max(1, self.total_steps)
    parts = [
      f"{self.name} step {step}/{self.total_steps} ({pct:.1f}%)",
      f"{self.rate(step):.1f} steps/s",
      f"ETA {format_eta(self.eta(step))}",
    ]
    line = " ".join(parts)
    if metrics:
      line += " | " + " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    self.last_line = line
    logging.info(line)
    return line
