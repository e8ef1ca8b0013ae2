"""Packing: the engine calls of several sweep points run as ONE engine program, without threads.

A runner is a generator (`train.driven`): it yields its `train.TrainCall`s (one, or several in a
list) and receives their `TrainResult`s.  `run_lockstep` advances the runners of a sweep's points
in lockstep: it collects each live runner's pending calls, groups them by
`engine.grouping.compatible` (same program: the model and the engine config up to the packable
fields `grouping.PACKABLE`, the same x and eval inputs), runs each group as one
`train.run_calls`, and sends each runner its results.  A group's
members are points x seeds, each with its own learning rate, momentum, weight decay, root seed,
labels and init; member (point p, seed s) equals point p run alone for seed s, so grouping
affects speed only.

    gens = [eigenmap.run.steps(cfg_a, wd_a), eigenmap.run.steps(cfg_b, wd_b)]
    outs = packing.run_lockstep(gens, packed_dir="WORKDIR/packed/<group>")  # [(value, error)]

Everything runs in the calling thread, in a fixed order (points by index, groups by first
appearance), so every process of a multi-host run issues the same engine programs in the same
order.  Host-fed calls (`engine.feed.Feed`: each streams its own data order) are never packed:
they run as programs of their own, which is logged once per round.
"""

import os
import time
from typing import Any, Callable, Generator, Sequence

from absl import logging

from rl_align import errors
from rl_align import sweep
from rl_align import train
from rl_align.engine import grouping


def run_lockstep(
  runners: Sequence[Generator], packed_dir: str | None = None, programs: list[int] | None = None
) -> list[tuple[Any, Exception | None]]:
  """Runs the runners (generators of TrainCalls, `train.driven`) in lockstep, their compatible
  calls packed (module docstring).  Returns (value, error) per runner: a runner that raises
  (also where a failed program's error is raised into it) is reported, the others go on.  An
  interrupt (`errors.Interrupted`) is raised into the runners of the program it stopped, every
  other runner is closed, and it propagates.

  Args:
    runners: one started-or-not generator per point, in the order that fixes the programs' order.
    packed_dir: the folder of the packed programs' orbax state (`train.run_calls`).
    programs: if given, the member count of every engine program run is appended (for reports).
  """
  out: list[tuple[Any, Exception | None]] = [(None, None)] * len(runners)
  pending: dict[int, Any] = {}  # runner -> its TrainCall, or list of TrainCalls

  def advance(i, step, value):
    try:
      pending[i] = step(value)
    except StopIteration as stop:
      out[i] = (stop.value, None)
    except Exception as e:  # pylint: disable=broad-except  # reported per runner
      out[i] = (None, e)

  for i, r in enumerate(runners):
    advance(i, r.send, None)
  while pending:
    order = sorted(pending)
    asked = {i: pending.pop(i) for i in order}
    owners = [
      (i, c) for i in order for c in (asked[i] if isinstance(asked[i], list) else [asked[i]])
    ]
    calls = [c for _, c in owners]
    train.mark_parts(calls)
    fed = sum(c.feed is not None for c in calls)
    if fed and len(calls) > 1:
      logging.info(
        "packing: %d host-fed call(s) of %d run apart, one program each (a host feed "
        "streams its own data order).",
        fed,
        len(calls),
      )
    got: list = [None] * len(calls)
    for idx in grouping.group(calls):
      try:
        results = train.run_calls([calls[k] for k in idx], packed_dir)
      except Exception as e:  # pylint: disable=broad-except  # raised inside each member's runner
        results = [e] * len(idx)
      except errors.Interrupted as e:
        _stop_all(runners, sorted({owners[k][0] for k in idx}), e)
        raise
      if programs is not None:
        programs.append(sum(len(calls[k].members) for k in idx))
      for k, r in zip(idx, results):
        got[k] = r
    for i in order:
      value, thrown = train.reply(asked[i], [r for (o, _), r in zip(owners, got) if o == i])
      advance(i, runners[i].throw if thrown else runners[i].send, value)
  return out


def _stop_all(runners: Sequence[Generator], stopped: Sequence[int], e: BaseException) -> None:
  """Raises the interrupt `e` inside the runners of the stopped program (they record it) and
  closes every runner."""
  for i in stopped:
    try:
      runners[i].throw(e)
    except BaseException:  # pylint: disable=broad-except  # each re-raises it: expected
      pass
  for r in runners:
    r.close()


def run_groups(
  run_point: Callable[[sweep.Point, str], Generator],
  points: Sequence[sweep.Point],
  groups: Sequence[Sequence[int]],
  workdir: str,
  is_main: bool = True,
) -> list[str]:
  """Runs the given groups' unfinished points, each group's in lockstep with its engine calls
  packed (`run_lockstep`, state in WORKDIR/packed/<group slug>); returns the errors.

  run_point(point, point_workdir) is the binary's runner on one point, as a generator of train
  calls (`train.driven`).  A point that raises an RLAlignError is reported (and left unfinished,
  so a rerun retries it); the others go on.
  """
  failures = []
  for gi, g in enumerate(groups):
    todo = [points[i] for i in g if not sweep.is_done(workdir, points[i])]
    if not todo:
      continue
    logging.info(
      "sweep: group %d/%d, %d point(s): %s", gi + 1, len(groups), len(todo), [p.slug for p in todo]
    )
    t0 = time.time()
    outs = run_lockstep(
      [run_point(p, sweep.point_dir(workdir, p)) for p in todo],
      os.path.join(workdir, "packed", sweep.group_slug(points, g)),
    )
    for p, (_, err) in zip(todo, outs):
      if err is None:
        if is_main:
          sweep.mark_done(workdir, p, time.time() - t0)
      elif isinstance(err, errors.RLAlignError):
        failures.append(f"{p.slug}: {err}")
      else:
        raise err
  return failures
