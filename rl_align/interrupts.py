"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM (SLURM, Kubernetes preemption).

The binaries install the handlers (`handled`, `experiments.cli`); the library never does.  A
signal then either stops the run at once (`errors.Interrupted` raised where Python is) or, inside
the engine's training loop (`deferred`), only sets a flag: the engine finishes the piece of steps it
is running, writes a checkpoint, and raises `errors.Interrupted` with the step, so a rerun of the
same command resumes there.  A second signal exits at once (exit code 128 + signal).  In a run of
several processes every process stops at the same step: `agreed` is a collective that the engine
calls at every event step.

    with interrupts.handled():                  # experiments.cli.run_main
      with interrupts.deferred():               # rl_align.train, around the training loop
        ...
        if interrupts.agreed():                 # at an event step
          save_checkpoint(); raise errors.Interrupted(interrupts.signal_number(), step)
"""

import contextlib
import os
import signal
import threading

from rl_align import errors

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
  signum: int | None = None  # the first signal received
  deferring: int = 0  # > 0 inside `deferred` blocks


_state = _State()


def _handler(signum, frame) -> None:
  del frame
  if _state.signum is not None:  # the second signal: now
    os.write(2, f"\nsignal {signum} again: exiting now.\n".encode())
    os._exit(128 + signum)
  _state.signum = signum
  if _state.deferring:
    os.write(
      2,
      (
        f"\nsignal {signum}: stopping at the next log step after a checkpoint "
        "(again to exit now).\n"
      ).encode(),
    )
    return
  raise errors.Interrupted(signum)


@contextlib.contextmanager
def handled():
  """Installs the SIGINT / SIGTERM handlers for the block (main thread only; elsewhere a no-op)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  old = {s: signal.signal(s, _handler) for s in SIGNALS}
  _state.signum, _state.deferring = None, 0
  try:
    yield
  finally:
    for s, h in old.items():
      signal.signal(s, h)
    _state.signum = None


@contextlib.contextmanager
def deferred():
  """A block in which a signal only sets the flag (the engine stops at its next event step).  A
  signal that arrived inside and was not acted on is raised when the block ends."""
  _state.deferring += 1
  try:
    yield
  finally:
    _state.deferring -= 1
  if not _state.deferring and _state.signum is not None:
    raise errors.Interrupted(_state.signum)


def signal_number() -> int | None:
  """The signal this process received, if any."""
  return _state.signum


def agreed() -> bool:
  """Whether to stop now: this process received a signal or, in a run of several processes, any
  process did (a collective: every process must call it at the same steps)."""
  import jax  # pylint: disable=g-import-not-at-top

  mine = _state.signum is not None
  if jax.process_count() == 1:
    return mine
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  got = multihost_utils.process_allgather(np.asarray([_state.signum or 0], np.int32))
  got = np.asarray(got).reshape(-1)
  if got.any() and not mine:  # stopped because another process was: by its signal
    _state.signum = int(got[np.flatnonzero(got)[0]])
  return bool(got.any())
