"""Checkpoint I/O: orbax checkpoints of the stacked train state, and where a run keeps them."""

import hashlib
import json
import os

from absl import logging
import jax
import numpy as np

from rl_align import errors
from rl_align.engine import programs

KEEP = 2  # checkpoints kept: the newest may be damaged by a crash while it is written


def state_dir(workdirs, names, packed_dir: str | None) -> str | None:
  """Where the orbax state lives: WORKDIR/<name>_state for a single call (as always); for a
  packed program of several calls, a folder of its own named after the calls' phases and
  workdirs (so a rerun of the same group finds it): in WORKDIR/packed when they share one
  workdir (a runner's list of calls), else in `packed_dir` (a sweep's).  None without workdirs."""
  if not any(workdirs):
    return None
  if len(workdirs) == 1:
    return os.path.abspath(os.path.join(workdirs[0], f"{names[0]}_state"))
  tag = hashlib.sha1(json.dumps([list(workdirs), list(names)]).encode()).hexdigest()[:12]
  if len(set(workdirs)) == 1:
    return os.path.abspath(os.path.join(workdirs[0], "packed", f"{names[0]}_{tag}"))
  if packed_dir is None:
    raise ValueError(
      f"{names[0]}: {len(workdirs)} packed calls with workdirs need a packed_dir "
      "for their state. Fix: pass packed_dir (a sweep passes WORKDIR/packed)."
    )
  return os.path.abspath(os.path.join(packed_dir, f"{names[0]}_{tag}"))


def _quiet_orbax(record) -> bool:
  """absl-logger filter: orbax logs ~40 INFO lines per save; keep its warnings only."""
  return record.levelno >= 30 or "orbax" not in record.pathname


def _host_registry(ocp):
  """Orbax's handlers for the leaves of a host state (numpy arrays and scalars), without orbax's
  default copy of every numpy array before it is written: `Checkpointer.save` writes synchronously a
  state that nothing modifies meanwhile (`programs.to_host`'s copy), so the copy only cost time and
  memory (about half of a checkpoint's time for a 100 MB state on a 2-core CPU)."""
  th = ocp.type_handlers
  scalar = th.ScalarHandler()
  return th.create_type_handler_registry(
    (int, scalar),
    (float, scalar),
    (bytes, scalar),
    (np.number, scalar),
    (np.ndarray, th.NumpyHandler(deepcopy_host_arrays=False)),
  )


class Checkpointer:
  """Orbax checkpoints of the stacked train state under `root`/checkpoints (the last KEEP).

  Every process calls `save` and `restore` (orbax synchronizes them); the state is the host copy
  of the global arrays, identical on every process.  A checkpoint that cannot be read (a crash or
  a full disk cut it short) is reported as damaged and the newest intact one is restored instead.
  """

  def __init__(self, root: str):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

    absl_logger = logging.get_absl_logger()
    if _quiet_orbax not in absl_logger.filters:
      absl_logger.addFilter(_quiet_orbax)
    self._ocp = ocp
    self.root = root
    opts = ocp.CheckpointManagerOptions(max_to_keep=KEEP, enable_async_checkpointing=False)
    self.mngr = ocp.CheckpointManager(
      os.path.join(self.root, "checkpoints"),
      options=opts,
      item_handlers=ocp.PyTreeCheckpointHandler(type_handler_registry=_host_registry(ocp)),
    )

  def save(self, step: int, host_state) -> None:
    self.mngr.save(step, args=self._ocp.args.PyTreeSave(tuple(host_state)), force=True)
    self.mngr.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def restore(self, template):
    """(step, host TrainState) of the newest checkpoint that can be read, or None when there is
    none.  Newer ones that cannot be read are reported as damaged and skipped; when none can be
    read, a WorkdirError says so with each one's error."""
    steps = sorted(self.mngr.all_steps(), reverse=True)
    if not steps:
      return None
    failures, damaged = [], []
    for step in steps:
      try:
        restored = self._read(step, template)
      except Exception as e:  # pylint: disable=broad-except  # damaged, or another model's
        failures.append(f"step {step}: {type(e).__name__}: {' '.join(str(e).split())[:160]}")
        damaged.append(step)
        continue
      if failures:
        logging.warning(
          "%s: checkpoint(s) %s are damaged and skipped; resuming from the intact "
          "checkpoint at step %d.",
          self.root,
          failures,
          step,
        )
        for bad in damaged:  # so that training past them can checkpoint those steps again
          self.mngr.delete(bad)
      return step, self._checked(step, template, restored)
    raise errors.WorkdirError(
      f"no checkpoint in {self.root}/checkpoints can be read ({'; '.join(failures)}): they are "
      "damaged, or were written by another model or config. Fix: delete that folder to train "
      "this phase again from its start, or rerun with the config that wrote them."
    )

  def _read(self, step: int, template):
    item = tuple(template)
    restore_args = self._ocp.checkpoint_utils.construct_restore_args(item)
    return self.mngr.restore(
      step, args=self._ocp.args.PyTreeRestore(item, restore_args=restore_args)
    )

  def _checked(self, step: int, template, restored):
    restored = programs.TrainState(*jax.tree.map(np.asarray, restored))
    # Orbax gives a leaf the checkpoint's shape whatever the template's: check it here.
    for (path, want), got in zip(
      jax.tree_util.tree_leaves_with_path(template), jax.tree.leaves(restored)
    ):
      if np.shape(want) != got.shape:
        raise self._mismatch(
          step,
          f"{jax.tree_util.keystr(path)} has shape {got.shape} in the "
          f"checkpoint, {np.shape(want)} in this run",
        )
    return restored

  def _mismatch(self, step, why: str) -> errors.ConfigError:
    return errors.ConfigError(
      f"the checkpoint at step {step} in {self.root} does not match this run's model or "
      f"config ({why}). Fix: use a fresh --workdir, or rerun with the config that wrote it."
    )
