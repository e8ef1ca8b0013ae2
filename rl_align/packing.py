"""Packing: the engine calls of several sweep points run as ONE engine program.

A packed sweep runs each point's ordinary runner (eigenmap, transfer, ...) in its own thread.  Every
`train.train` call of those threads is handed to a `Rendezvous` instead of running.  When every
live thread waits there, the waiting calls are grouped by `compatible` (same program: the model up
to its init-only fields, the engine config up to the per-member hyper-parameters and seeds, the
same x and eval inputs, the same phase) and each group runs as one `train.run_calls`: its members
are points x seeds, each with its own learning rate, momentum, weight decay, root seed, labels and
init.  Member (point p, seed s) equals point p run alone for seed s, so grouping affects speed only.

    rv = packing.Rendezvous(packed_dir="WORKDIR/packed")
    results = rv.run([lambda: eigenmap.run(cfg_a, wd_a), lambda: eigenmap.run(cfg_b, wd_b)])

Grouping is deterministic (thread order), so every process of a multi-host run issues the same
engine programs in the same order.
"""
import threading
from typing import Any, Callable, Sequence

import numpy as np

from rl_align import seeds
from rl_align import train

# Model fields that change only the init, not the program (the engine inits each call's model).
INIT_FIELDS = ("kernel_init", "init_scale", "first_layer_init", "first_layer_scale",
               "first_layer_std", "residual_init_scale")
# Engine-config fields that may differ between the members of one program.
MEMBER_FIELDS = seeds.MEMBER_HPARAMS + ("seed", "seed_offset", "num_seeds")


def program_model(model):
  """The model with its init-only fields blanked: two calls share a program iff these are equal."""
  return model.clone(**{f: "<init>" for f in INIT_FIELDS if hasattr(model, f)})


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
  return {k: v for k, v in cfg.to_dict().items() if k not in MEMBER_FIELDS}


def compatible(a: train.TrainCall, b: train.TrainCall) -> bool:
  """True when calls a and b can run as members of one engine program."""
  if a.name != b.name or type(a.model) is not type(b.model):
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


class _Slot:
  def __init__(self, order: int, call: train.TrainCall):
    self.order, self.call = order, call
    self.result, self.error, self.done = None, None, False


class Rendezvous:
  """Collects the `train.train` calls of several threads and runs them packed (module docstring).

  Args:
    packed_dir: where a packed group keeps its orbax state (a single call keeps it in its own
      workdir, as an unpacked run does, so packed and unpacked runs resume each other).
  """

  def __init__(self, packed_dir: str | None = None):
    self.packed_dir = packed_dir
    self._cv = threading.Condition()
    self._live = 0
    self._waiting: list[_Slot] = []
    self._order = threading.local()
    self.programs: list[int] = []   # members per engine program run, in order (for reports)

  def submit(self, call: train.TrainCall) -> train.TrainResult:
    """Called by `train.train` inside a thread of `run`: blocks until the call has run."""
    slot = _Slot(self._order.value, call)
    with self._cv:
      self._waiting.append(slot)
      self._dispatch_if_all_wait()
      while not slot.done:
        self._cv.wait()
    if slot.error is not None:
      raise slot.error
    return slot.result

  def _dispatch_if_all_wait(self) -> None:
    """With the lock held: when every live thread waits, run the waiting calls, grouped."""
    while self._waiting and len(self._waiting) == self._live:
      slots = sorted(self._waiting, key=lambda s: s.order)
      self._waiting = []
      self._cv.release()
      try:
        for idx in group([s.call for s in slots]):
          batch = [slots[i] for i in idx]
          try:
            results = train.run_calls([s.call for s in batch], self.packed_dir)
            self.programs.append(sum(len(s.call.members) for s in batch))
            for s, r in zip(batch, results):
              s.result = r
          except Exception as e:  # pylint: disable=broad-except  # re-raised in each caller
            for s in batch:
              s.error = e
      finally:
        self._cv.acquire()
      for s in slots:
        s.done = True
      self._cv.notify_all()

  def run(self, fns: Sequence[Callable[[], Any]]) -> list[tuple[Any, BaseException | None]]:
    """Runs every fn in its own thread with its train calls packed; (result, error) per fn."""
    out: list[Any] = [(None, None)] * len(fns)

    def worker(i, fn):
      self._order.value = i
      try:
        with train.submit_to(self):
          out[i] = (fn(), None)
      except BaseException as e:  # pylint: disable=broad-except  # reported per point
        out[i] = (None, e)
      finally:
        with self._cv:
          self._live -= 1
          self._dispatch_if_all_wait()
          self._cv.notify_all()

    with self._cv:
      self._live = len(fns)
    threads = [threading.Thread(target=worker, args=(i, fn), name=f"point-{i}", daemon=True)
               for i, fn in enumerate(fns)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    return out
