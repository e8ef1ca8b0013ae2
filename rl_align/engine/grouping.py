"""Which engine calls can run as members of one program (`compatible`, `group`): the rule shared by
a runner that yields several calls at once (`rl_align.train.drive`) and a sweep that advances its
points in lockstep (`rl_align.packing`).

Calls pack when they run the same program: the same model up to its init-only fields, the same
engine config up to `PACKABLE` (per-member optimizer scalars, root and label seeds, seed ids and
counts, init scales), the same inputs and eval inputs, workdirs and init params given alike.  A
host-fed call never packs (each feed streams its own data order).  Packing affects speed only:
every member of a packed program equals its call run alone.

    from rl_align.engine import grouping
    grouping.group([call_a, call_b, call_c])     # [[0, 2], [1]]: a and c share one program
"""

from typing import Any, Sequence

import numpy as np

# Engine-config and model fields that change neither shapes nor the program: per-member optimizer
# scalars (`seeds.MEMBER_HPARAMS`), who the members are (root seed, seed ids, label draw) and the
# model's init-only fields.
PACKABLE = (
  "learning_rate",
  "momentum",
  "weight_decay",
  "seed",
  "seed_offset",
  "num_seeds",
  "label_seed",
  "kernel_init",
  "init_scale",
  "first_layer_init",
  "first_layer_scale",
  "first_layer_std",
  "residual_init_scale",
)


def program_model(model):
  """The model with its packable (init-only) fields blanked: calls share a program iff equal."""
  return model.clone(**{f: "<init>" for f in PACKABLE if hasattr(model, f)})


def same(a: Any, b: Any) -> bool:
  """Deep equality of call arguments: arrays by value, closures by code and captured values."""
  if a is b:
    return True
  if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) or hasattr(a, "__array__"):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
  if callable(a) and hasattr(a, "__code__") and hasattr(b, "__code__"):
    cells = lambda f: [c.cell_contents for c in (f.__closure__ or ())]
    return (
      a.__code__ is b.__code__
      and len(cells(a)) == len(cells(b))
      and all(same(x, y) for x, y in zip(cells(a), cells(b)))
      and same(a.__defaults__, b.__defaults__)
    )
  if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
  if isinstance(a, dict) and isinstance(b, dict):
    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
  try:
    return bool(a == b)
  except Exception:  # pylint: disable=broad-except
    return False


def _engine_fields(cfg) -> dict:
  return {k: v for k, v in cfg.to_dict().items() if k not in PACKABLE}


def compatible(a, b) -> bool:
  """True when `train.TrainCall`s a and b can run as members of one engine program."""
  if a.feed is not None or b.feed is not None or type(a.model) is not type(b.model):
    return False
  if program_model(a.model) != program_model(b.model):
    return False
  if not same(_engine_fields(a.cfg), _engine_fields(b.cfg)):
    return False
  if (a.workdir is None) != (b.workdir is None):
    return False
  if (a.init_params is None) != (b.init_params is None):
    return False
  if (a.probe_fn is None) != (b.probe_fn is None) or (
    a.probe_fn and not same(a.probe_fn, b.probe_fn)
  ):
    return False
  ea, eb = dict(a.eval_sets or {}), dict(b.eval_sets or {})
  if ea.keys() != eb.keys() or not all(same(ea[k][0], eb[k][0]) for k in ea):
    return False
  return same(a.x, b.x)


def group(calls: Sequence[Any]) -> list[list[int]]:
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
