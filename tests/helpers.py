"""Helpers shared by the test files (process-wide test setup is tests/conftest.py)::

from tests.helpers import ROOT, run_module, train_config
proc = run_module("experiments.transfer", "--config=...", f"--workdir={wd}")
cfg = train_config(num_seeds=2, num_epochs=1, batch_size=16)
"""

import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root

# Every test process and the binaries, notebooks and workers they start share JAX's persistent
# compilation cache (also across sessions; tests/conftest.py sets it for the whole session): the
# suite compiles the same tiny programs many times, and only the first compile of each is paid.
JAX_CACHE_ENV = {
  "JAX_COMPILATION_CACHE_DIR": os.path.join(
    tempfile.gettempdir(), f"rl_align_jax_cache_{os.getuid()}"
  ),
  "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
  "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}

# The disk cache of the resized embedded photos (rl_align/data/cache.py) for the suite's processes.
DATA_CACHE_DIR = os.path.join(tempfile.gettempdir(), f"rl_align_data_cache_{os.getuid()}")


# The sweep of tests/conftest.py's `sweep_one_task` (fig20 right tiny, 1 epoch, 2 batch sizes x
# (learning rate, root seed) zipped: 2 groups of 2 packed points, 2 members each), which
# tests/test_sweep.py checks (packing, files) and splits over two tasks.
SWEEP_CONFIG = "--config=experiments/configs/fig20.py:right,tiny"
SPLIT_SWEEP = [
  "--sweep=train.batch_size=64,128",
  "--sweep_zip=train.learning_rate=0.01,0.05;train.seed=0,3",
  "--config.train.num_epochs=1",
]


def child_env(env=None) -> dict:
  """This process's environment with `env` over it (a value None removes that variable)."""
  full = {**os.environ, **(env or {})}
  return {k: v for k, v in full.items() if v is not None}


def run_python(*args: str, timeout: float = 600, env=None) -> subprocess.CompletedProcess:
  """`python *args` in ROOT; stdout / stderr captured as text; env: see child_env."""
  return subprocess.run(
    [sys.executable, *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=child_env(env),
  )


def run_module(
  module: str, *args: str, timeout: float = 600, env=None
) -> subprocess.CompletedProcess:
  """`python -m module *args` in ROOT, as a user runs it (see run_python)."""
  return run_python("-m", module, *args, timeout=timeout, env=env)


def train_config(**fields):
  """`rl_align.engine.config.default_config()` with `fields` set."""
  # Imported here: this module stays light for the tests that only run subprocesses.
  from rl_align.engine import config as engine_config  # pylint: disable=g-import-not-at-top

  cfg = engine_config.default_config()
  for k, v in fields.items():
    cfg[k] = v
  return cfg
