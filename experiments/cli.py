"""The command-line plumbing of the binaries in experiments/ (the library never imports it).

A binary is three lines::

    from experiments import cli
    from rl_align.runners import eigenmap as eigenmap_runner
    cli.define_config_flags("experiments/configs/fig20.py:all")
    if __name__ == "__main__":
      cli.launch(eigenmap_runner.run_panels)

`launch` parses --config / --workdir (absl, ml_collections config files), then `run_main` runs
fn(config, workdir).  Every mistake a user can make (a bad config argument such as
`fig1.py:negtive`, a bad flag value, a missing --workdir, a missing dataset, a config that differs
from the one already in the workdir, a workdir another run holds) reaches them as ONE line
`error: ...` on stderr and exit code 2, without a traceback; everything already written stays in
place.  The config is validated before anything is written to the workdir (`validate`).

Where the run records itself is `rl_align.workdir`: `run_main` holds the workdir's lock for the
run (a second run on it exits 2 naming the holder), writes config.json and WORKDIR/run.json: the
machine (CPU, cores, JAX devices, fp32 matmul rate measured at the start, `rl_align.machine`), the
command line, start and end time and wall seconds (process 0 only), the status, and the accounting:
the training steps' matmul/conv FLOPs of every engine call the run made (`rl_align.flops`), the
achieved rate (FLOPs / wall seconds) and its fraction of the measured peak, also logged as the
run's last line, e.g.
`done: 69.1 TFLOP in 755 s = 91.5 GFLOP/s, 47% of the measured peak 195 GFLOP/s (...)`.
Every engine call gets the workdir's metric writers (metrics.jsonl, TensorBoard) and the run's FLOP
ledger explicitly (`train.recorded`).

SIGINT (Ctrl-C) and SIGTERM (a cluster's stop) are handled (`rl_align.interrupts`): the engine
stops at its next event step after a checkpoint, run.json says `interrupted at step N of PHASE`,
and the process exits with 130 / 143; a second signal exits at once.  Rerunning resumes.
Before anything uses a device, `launch` and `run_main` expose one XLA host device per core
(`experiments.host_devices`; the user's XLA_FLAGS win): a process-wide setting the library never
makes.
"""

import importlib
import sys
from typing import Any, Callable, Generator, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from experiments import host_devices
from experiments import scaleout
from rl_align import errors
from rl_align import flops as flops_lib
from rl_align import interrupts
from rl_align import machine
from rl_align import train
from rl_align import workdir as workdir_lib
from rl_align.data import registry as data_registry
from rl_align.engine import config as engine_config

FLAGS = flags.FLAGS


def define_config_flags(example: str) -> None:
  """Defines the binaries' --config (a config file, e.g. `example`) and --workdir flags.

  They are registered under the running binary, so its --helpshort lists them.
  """
  config_flags.DEFINE_config_file("config", None, f"Config file, e.g. {example}")
  scaleout.define_flags()
  flags.DEFINE_string("workdir", None, "Output folder; rerunning on it resumes.")
  for name in ("config", "workdir"):
    FLAGS.register_flag_by_module(sys.argv[0], FLAGS[name])


def fail(message: str) -> None:
  """Prints `error: message` (one line) on stderr and exits with code 2."""
  logging.flush()
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(2)


def _user_error(exc: BaseException) -> errors.RLAlignError | None:
  """The innermost RLAlignError in exc's chain: config_flags wraps a ConfigError raised in a config
  file's get_config twice (once with a traceback in its text, once as an absl flag error)."""
  found, seen = None, set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if isinstance(exc, errors.RLAlignError):
      found = exc
    exc = exc.__cause__ or exc.__context__
  return found


def _config_not_loaded(e: OSError) -> None:
  fail(
    f"--config could not be loaded ({str(e).splitlines()[-1].strip()}). Fix: pass an existing "
    "config file, e.g. --config=experiments/configs/fig20.py:all."
  )


def parse_flags(argv: Sequence[str]) -> list:
  """absl's flag parser, with every parsing error as one `error:` line and exit code 2."""
  try:
    return FLAGS(argv)
  except (flags.Error, errors.RLAlignError) as e:
    user = _user_error(e)
    if user is not None:
      fail(user)
    fail(f"{str(e).splitlines()[0].rstrip('.')}. Fix: see --helpshort.")
  except OSError as e:  # --config.x=... on a config file that could not be loaded
    _config_not_loaded(e)
  except (AttributeError, KeyError) as e:  # --config.x=... naming a field the config lacks
    while isinstance(e, BaseException) and e.args:  # ml_collections nests the KeyError's text
      e = e.args[0]
    name, *hint = str(e).splitlines()
    hint = f" ({' '.join(hint).strip()})" if hint else ""
    fail(
      f"a --config.<field> override names a field the config does not have: {name}{hint}. "
      "Fix: check the field's spelling in the config file."
    )


def loaded_config() -> ml_collections.ConfigDict:
  """FLAGS.config, or one error line when its file could not be loaded (config_flags defers that)."""
  config = FLAGS.config
  if isinstance(config, ml_collections.ConfigDict):
    return config
  try:
    config.to_dict()
  except OSError as e:
    _config_not_loaded(e)
  return config


def validate(fn: Callable[[Any, str], Any], config) -> None:
  """Every check of the config that needs no data, before anything is written: the engine fields
  of config.train, then the runner module's own `validate(config)` if it has one."""
  if "train" in config:
    engine_config.validate_fields(config.train, "train")
  module = importlib.import_module(getattr(fn, "__module__", "") or __name__)
  check = getattr(module, "validate", None)
  if callable(check):
    check(config)


def run_recorded(
  fn: Callable[[Any, str], Any], config, workdir: str, argv: Sequence[str] | None = None
) -> Any:
  """fn(config, workdir) with config.json and run.json in workdir; errors propagate."""
  return train.drive(recorded_steps(fn, config, workdir, argv))


def _steps(fn: Callable[[Any, str], Any]) -> Callable[[Any, str], Generator]:
  """fn's generator function (a `train.driven` runner), or one that runs a plain fn (whose train
  calls then run alone, also in a sweep)."""
  if hasattr(fn, "steps"):
    return fn.steps

  def plain(config, workdir):
    yield from ()  # a generator that yields no call
    return fn(config, workdir)

  return plain


def recorded_steps(
  fn: Callable[[Any, str], Any], config, workdir: str, argv: Sequence[str] | None = None
) -> Generator:
  """`run_recorded` as a generator of fn's train calls (`train.driven`): a sweep runs one per
  point and packs their calls (`rl_align.packing`).  The config is validated, the workdir's lock
  taken for the run's life, then config.json and run.json are written; every call fn makes
  carries the run's FLOP ledger and the workdir's metric writers (`train.recorded`), and only
  those calls' FLOPs are in run.json."""
  validate(fn, config)
  with workdir_lib.Lock(workdir_lib.ensure(workdir), argv=argv):
    return (yield from _recorded(fn, config, workdir, argv))


def _recorded(fn, config, workdir: str, argv) -> Generator:
  record = workdir_lib.RunRecord(workdir, argv)
  ledger = flops_lib.Ledger()
  read_from = len(data_registry.READ)
  status = "finished"
  try:
    workdir_lib.check_config(config, workdir)
    record.start(machine.describe())
    out = yield from train.recorded(_steps(fn)(config, workdir), ledger, workdir_lib.writer)
  except errors.Interrupted as e:
    status = "interrupted" + (f" at step {e.step} of {e.phase}" if e.step is not None else "")
    raise
  except errors.RLAlignError as e:
    status = f"error: {e}"
    raise
  except GeneratorExit:
    status = "stopped (its sweep ended early)"
    raise
  except BaseException as e:
    status = f"failed: {type(e).__name__}"
    raise
  finally:  # what the run read (and why, where a fallback was taken), then its status
    record.rec["data_read"] = data_registry.READ[read_from:]
    record.finish(status, ledger)
  if record.active:
    logging.info("%s", flops_lib.summary_line(record.rec["accounting"]))
  return out


def run_main(
  fn: Callable[[Any, str], Any], config, workdir: str, argv: Sequence[str] | None = None
) -> Any:
  """Runs fn(config, workdir) as a binary does: config.json and run.json in workdir, and every
  RLAlignError as one `error:` line with exit code 2 (no traceback).  argv: the command line to
  record in run.json (default sys.argv).  With --sweep flags, runs the sweep instead."""
  host_devices.expose_host_cores()  # a no-op once jax's backends are up
  if not workdir:
    fail("--workdir is required. Fix: pass --workdir=/path/to/run (rerun resumes there).")
  try:
    # jax.distributed.initialize installs the coordination service's own SIGTERM notifier (the
    # C++ preemption hook): our handlers go in after it, or a SIGTERM would bypass them and leave
    # the other processes waiting in a collective.
    scaleout.init_processes()
    with interrupts.handled():
      if scaleout.is_sweep():  # each point's run holds its own workdir (tasks share the root)
        return scaleout.run_sweep(lambda c, d: recorded_steps(fn, c, d, argv), config, workdir)
      return run_recorded(fn, config, workdir, argv)
  except errors.RLAlignError as e:
    fail(e)
  except errors.Interrupted as e:
    logging.flush()
    where = f" at step {e.step} of {e.phase}" if e.step is not None else ""
    print(
      f"interrupted (signal {e.signum}){where}: rerun the same command to resume from {workdir}.",
      file=sys.stderr,
    )
    sys.exit(128 + e.signum)


def launch(fn: Callable[[Any, str], Any], summary: Callable[[Any], str] | None = None) -> None:
  """absl entry point of a config binary: run_main(fn, --config, --workdir), then print summary(out).

  Flags that change how the run is executed rather than what it computes (scale-out: sweeps,
  multi-host coordinates) belong here, between the parsed flags and run_main.
  """

  def main(argv):
    del argv
    out = run_main(fn, loaded_config(), FLAGS.workdir)
    if scaleout.is_sweep():
      print(scaleout.sweep_table(out))
    elif summary is not None:
      print(summary(out))

  host_devices.expose_host_cores()  # before any device use (config files are loaded by app.run)
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=parse_flags)
