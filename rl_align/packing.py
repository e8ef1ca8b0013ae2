"""Packing: the engine calls of several sweep points run as ONE engine program, without threads.

A runner is a generator (`train.driven`): it yields its `train.TrainCall`s and receives their
`TrainResult`s.  `run_lockstep` advances the runners of a sweep's points in lockstep: it collects
each live runner's pending call, groups the calls by `compatible` (same program: the model and the
engine config up to the packable fields `sweep.PACKABLE`, the same x and eval inputs, the same
phase), runs each group as one `train.run_calls`, and sends each runner its result.  A group's
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
import numpy as np

from rl_align import errors
from rl_align import sweep
from rl_align import train
from rl_align.engine import feed as feed_lib


def program_model(model):
  """The model with its packable (init-only) fields blanked: calls share a program iff equal."""
  return model.clone(**{f: "<init>" for f in sweep.PACKABLE if hasattr(model, f)})


def _same(a: Any, b: Any) -> bool:
  if a is b:
    return True
  if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) or hasattr(a, "__array__"):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
  if callable(a) and hasattr(a, "__code__") and hasattr(b, "__code__"):
    cells = lambda f: [c.cell_contents for c in (f.__closure__ or ())]
    return (a.__code__ is b.__code__ and len(cells(a)) == len(cells(b))
            and all(_same(x, y) for x, y in zip(cells(a), cells(b)))
            and _same(a.__defaults__, b.__defaults__))
  if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  if isinstance(a, dict) and isinstance(b, dict):
    return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
  try:
    return bool(a == b)
  except Exception:  # pylint: disable=broad-except
    return False


def _engine_fields(cfg) -> dict:
  return {k: v for k, v in cfg.to_dict().items() if k not in sweep.PACKABLE}


def host_fed(c: train.TrainCall) -> bool:
  return isinstance(c.x, feed_lib.Feed)


def compatible(a: train.TrainCall, b: train.TrainCall) -> bool:
  """True when calls a and b can run as members of one engine program."""
  if host_fed(a) or host_fed(b) or a.name != b.name or type(a.model) is not type(b.model):
    return False
  if program_model(a.model) != program_model(b.model):
    return False
  if not _same(_engine_fields(a.cfg), _engine_fields(b.cfg)):
    return False
  if (a.workdir is None) != (b.workdir is None):
    return False
  if (a.init_params is None) != (b.init_params is None):
    return False
  if (a.probe_fn is None) != (b.probe_fn is None) or (a.probe_fn and not _same(a.probe_fn, b.probe_fn)):
    return False
  ea, eb = dict(a.eval_sets or {}), dict(b.eval_sets or {})
  if ea.keys() != eb.keys() or not all(_same(ea[k][0], eb[k][0]) for k in ea):
    return False
  return _same(a.x, b.x)


def group(calls: Sequence[train.TrainCall]) -> list[list[int]]:
  """Indices of calls grouped by `compatible`, in order of first appearance."""
  groups: list[list[int]] = []
  for i, c in enumerate(calls):
    for g in groups:
      if compatible(calls[g[0]], c):
        g.append(i)
        break
    else:
      groups.append([i])
  return groups


def run_lockstep(runners: Sequence[Generator], packed_dir: str | None = None,
                 programs: list[int] | None = None) -> list[tuple[Any, Exception | None]]:
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
  pending: dict[int, train.TrainCall] = {}

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
    calls = [pending.pop(i) for i in order]
    fed = sum(host_fed(c) for c in calls)
    if fed and len(calls) > 1:
      logging.info("packing: %d host-fed call(s) of %d run apart, one program each (a host feed "
                   "streams its own data order).", fed, len(calls))
    for idx in group(calls):
      try:
        results = train.run_calls([calls[k] for k in idx], packed_dir)
        replies = [(runners[order[k]].send, r) for k, r in zip(idx, results)]
      except Exception as e:  # pylint: disable=broad-except  # raised inside each member's runner
        replies = [(runners[order[k]].throw, e) for k in idx]
      except errors.Interrupted as e:
        _stop_all(runners, [order[k] for k in idx], e)
        raise
      if programs is not None:
        programs.append(sum(len(calls[k].members) for k in idx))
      for k, (step, value) in zip(idx, replies):
        advance(order[k], step, value)
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


def run_groups(run_point: Callable[[sweep.Point, str], Generator], points: Sequence[sweep.Point],
               groups: Sequence[Sequence[int]], workdir: str, is_main: bool = True) -> list[str]:
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
    logging.info("sweep: group %d/%d, %d point(s): %s", gi + 1, len(groups), len(todo),
                 [p.slug for p in todo])
    t0 = time.time()
    outs = run_lockstep([run_point(p, sweep.point_dir(workdir, p)) for p in todo],
                        os.path.join(workdir, "packed", sweep.group_slug(points, g)))
    for p, (_, err) in zip(todo, outs):
      if err is None:
        if is_main:
          sweep.mark_done(workdir, p, time.time() - t0)
      elif isinstance(err, errors.RLAlignError):
        failures.append(f"{p.slug}: {err}")
      else:
        raise err
  return failures
