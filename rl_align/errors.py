"""User-facing errors.

Every error a user can cause (a bad flag, a wrong shape, NaN data, a singular matrix, a missing
dataset) is raised as a subclass of :class:`RLAlignError` whose message names the problem *and* the
fix.  Binaries catch :class:`RLAlignError` and print the message alone, without a traceback::

    from rl_align import errors
    raise errors.ConfigError("config.num_seeds must be >= 1, got 0. Fix: pass --config.num_seeds=8.")
"""


class RLAlignError(ValueError):
  """Base class of every error a user can fix; the message says how."""


class ConfigError(RLAlignError):
  """A config field or flag has an invalid value."""


class DataError(RLAlignError):
  """Input data is malformed: wrong rank/shape/dtype, NaN or inf values."""


class DatasetNotFoundError(DataError):
  """A dataset is not prepared in the data_dir (and was not asked to be downloaded, or the download failed)."""


class NumericalError(RLAlignError):
  """A matrix is singular / not PSD, or training diverged."""


class WorkdirError(RLAlignError):
  """The workdir cannot be used as it is: another run holds it, a file in it is damaged, it is
  not writable, or it is not a folder."""


class Interrupted(BaseException):
  """A run stopped on SIGINT / SIGTERM at a clean point (`rl_align.interrupts`); rerunning the same
  command resumes it.  Not an RLAlignError: nothing is wrong with the input, and code that catches
  `Exception` must not swallow it."""

  def __init__(self, signum: int, step: int | None = None, phase: str | None = None):
    self.signum, self.step, self.phase = int(signum), step, phase
    where = f" at step {step} of {phase}" if step is not None else ""
    super().__init__(f"interrupted by signal {self.signum}{where}")
