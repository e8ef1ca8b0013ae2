"""A runner's phases in its workdir: engine configs of a phase, results computed once and read
back on a rerun, params as npz, panel subfolders.

    from rl_align.runners import phases
    cfg = phases.engine_config(config, seed=3, num_steps=300, eval_every_steps=15)
    out = phases.resume(folder, "downstream_scratch", lambda: {...})   # computed once, then read back
    out = yield from phases.resume_steps(folder, "upstream", compute)  # compute: a generator function
    path = phases.subdir(workdir, "random", panel_config)              # WORKDIR/random, its config.json

Nothing here holds state between calls.
"""

import copy
import os
from typing import Any, Callable, Generator, Mapping

import flax
import ml_collections
import numpy as np

from rl_align import inputs
from rl_align import results
from rl_align import workdir as workdir_lib

jsonable = inputs.json_roundtrip  # obj as it reads back from JSON: what a resumed run sees


def engine_config(config, seed: int, **fields) -> ml_collections.ConfigDict:
  """A copy of config.train with `fields` (e.g. num_steps=300; None keeps the value) replaced,
  root seed `seed` and no snapshots: the engine config of one phase of an experiment."""
  cfg = ml_collections.ConfigDict(copy.deepcopy(config.train.to_dict()))
  for k, v in fields.items():
    if v is not None:
      cfg[k] = v
  cfg.seed = int(seed)
  cfg.snapshot_steps, cfg.snapshot_epochs = (), ()
  return cfg


def flatten(params) -> dict[str, np.ndarray]:
  """Nested params -> {"layer/.../kernel": array} (npz friendly)."""
  return {
    "/".join(k): np.asarray(v)
    for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(params)).items()
  }


def unflatten(flat: Mapping[str, Any]):
  """{"layer/.../kernel": array} -> nested params (the inverse of `flatten`)."""
  return flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def resume(folder: str, name: str, compute: Callable[[], Any], *, with_arrays: bool = False):
  """The result of a phase, computed once: folder/<name>.json when a run finished it, else
  compute() written there (last: its presence marks the phase finished) and returned as it reads
  back, so that a first run and a rerun return the same JSON-typed object.

  With with_arrays, compute returns (summary, {key: array}); the arrays go to folder/<name>.npz and
  the call returns (summary, arrays).
  """
  done = _finished(folder, name, with_arrays)
  return done if done is not None else _store(folder, name, compute(), with_arrays)


def resume_steps(
  folder: str, name: str, compute: Callable[[], Generator], *, with_arrays: bool = False
) -> Generator:
  """`resume` of a phase whose compute is a generator function of train calls (`train.driven`):
  ``out = yield from phases.resume_steps(folder, name, compute)``."""
  done = _finished(folder, name, with_arrays)
  return done if done is not None else _store(folder, name, (yield from compute()), with_arrays)


def _finished(folder: str, name: str, with_arrays: bool):
  """What `resume` returns for a finished phase; None when it has not finished."""
  done = results.read_json(folder, f"{name}.json")
  if not with_arrays:
    return done
  arrays = results.read_npz(folder, f"{name}.npz")
  return None if done is None or arrays is None else (done, arrays)


def _store(folder: str, name: str, value, with_arrays: bool):
  """Writes a phase's computed value (arrays first, the summary last) and returns it as read back."""
  summary, arrays = value if with_arrays else (value, None)
  if with_arrays:
    results.write_npz(folder, f"{name}.npz", arrays)
  done = jsonable(summary)
  results.write_json(folder, f"{name}.json", done)
  return (done, arrays) if with_arrays else done


def subdir(workdir: str, name: str, config) -> str:
  """workdir/name, created, holding `config` (checked like the workdir's own config)."""
  path = workdir_lib.ensure(os.path.join(workdir, name))
  workdir_lib.check_config(config, path)
  return path
