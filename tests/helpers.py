"""Helpers shared by the test files (process-wide test setup is tests/conftest.py)::

    from tests.helpers import ROOT, run_module, train_config
    proc = run_module("experiments.transfer", "--config=...", f"--workdir={wd}", share_cache=True)
    cfg = train_config(num_seeds=2, num_epochs=1, batch_size=16)
"""
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository root

# The binaries' end-to-end tests and the notebook test compile the same tiny programs: they share
# JAX's persistent compilation cache (also across sessions), so that only the first run compiles.
JAX_CACHE_ENV = {
    "JAX_COMPILATION_CACHE_DIR": os.path.join(tempfile.gettempdir(),
                                              f"rl_align_jax_cache_{os.getuid()}"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def run_module(module: str, *args: str, timeout: float = 600, env=None,
               share_cache: bool = False) -> subprocess.CompletedProcess:
  """`python -m module *args` in ROOT, as a user runs it; stdout / stderr captured as text.

  env: variables over this process's environment; share_cache: also JAX_CACHE_ENV.
  """
  full = {**os.environ, **(JAX_CACHE_ENV if share_cache else {}), **(env or {})}
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout, env=full)


def train_config(**fields):
  """`rl_align.engine.config.default_config()` with `fields` set."""
  # Imported here: this module stays light for the tests that only run subprocesses.
  from rl_align.engine import config as engine_config  # pylint: disable=g-import-not-at-top
  cfg = engine_config.default_config()
  for k, v in fields.items():
    cfg[k] = v
  return cfg
