"""Progress reports with steps/s and ETA for long runs.

Usage::

    p = progress.Progress(total_steps=15_800, start_step=0, name="fig20/left")
    ...
    p.report(step, {"loss": 2.29, "acc": 0.13})   # logs "fig20/left step 1200/15800 (7.6%) 250 steps/s ETA 0:01:02 | loss 2.29 acc 0.13"
"""
import datetime
import time
from typing import Mapping

from absl import logging


def format_eta(seconds: float) -> str:
  if seconds != seconds or seconds == float("inf"):
    return "?"
  return str(datetime.timedelta(seconds=int(round(seconds))))


class Progress:
  """Tracks throughput since the (re)start of a run and logs step, steps/s, ETA and metrics."""

  def __init__(self, total_steps: int, start_step: int = 0, name: str = "train", clock=time.perf_counter):
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
    parts = [f"{self.name} step {step}/{self.total_steps} ({pct:.1f}%)",
             f"{self.rate(step):.1f} steps/s", f"ETA {format_eta(self.eta(step))}"]
    line = " ".join(parts)
    if metrics:
      line += " | " + " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    self.last_line = line
    logging.info(line)
    return line
