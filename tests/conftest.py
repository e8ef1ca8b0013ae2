"""Process-wide test setup, done once per pytest process (each xdist worker loads this first).

One XLA host device per core, as the binaries get it (`experiments.host_devices`; the library never
sets XLA_FLAGS): set here, before any test module initializes jax's backends, so the multi-device
engine paths (seeds sharded over devices) run on a multi-core machine; subprocesses the tests start
inherit it.  An XLA_FLAGS that already sets the device count wins.

JAX's persistent compilation cache (`tests.helpers.JAX_CACHE_ENV`) for this process and, through
the environment, every binary, worker and notebook kernel the tests start: the same tiny programs
compile once per machine, not once per test.  A JAX_COMPILATION_CACHE_DIR already set wins.

Markers (pytest.ini): `slow` marks the end-to-end runs of binaries, notebooks and several
processes; `python -m pytest -m "not slow" tests` leaves them out while you work, CI runs all.
Shared helpers: tests/helpers.py.
"""
import os

from experiments import host_devices
from tests import helpers

host_devices.expose_host_cores()
for _name, _value in helpers.JAX_CACHE_ENV.items():
  os.environ.setdefault(_name, _value)
