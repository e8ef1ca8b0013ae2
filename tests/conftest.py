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
import collections
import os

import pytest

from experiments import host_devices
from tests import helpers

host_devices.expose_host_cores()
for _name, _value in helpers.JAX_CACHE_ENV.items():
  os.environ.setdefault(_name, _value)


def _module_fixtures(item) -> list[str]:
  """Names of the module-scoped fixtures defined in item's own file that item uses."""
  defs = item._fixtureinfo.name2fixturedefs   # pylint: disable=protected-access
  return sorted(name for name in item.fixturenames if name in defs
                and defs[name][-1].scope == "module"
                and defs[name][-1].baseid == item.nodeid.split("::")[0])


@pytest.hookimpl(tryfirst=True)   # before pytest-xdist's worker reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
  """For pytest-xdist's `--dist loadgroup` (pytest.ini): the tests that share a module fixture
  (mostly one end-to-end run) form one group, so that it runs once, on one worker; every other
  test is scheduled alone.  Files go in the order of how many slow tests they hold, most first
  (each file's own order kept; pytest.ini turns off xdist's reordering), so that the longest work
  starts early and quick tests fill the gaps at the end."""
  del config
  slow = collections.Counter()
  for item in items:
    if _module_fixtures(item):
      item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    slow[item.path] += item.get_closest_marker("slow") is not None
  items.sort(key=lambda item: -slow[item.path])
