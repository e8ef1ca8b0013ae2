"""Process-wide test setup, done once per pytest process (each xdist worker loads this first).

One XLA host device per core, as the binaries get it (`experiments.host_devices`; the library never
sets XLA_FLAGS): set here, before any test module initializes jax's backends, so the multi-device
engine paths (seeds sharded over devices) run on a multi-core machine; subprocesses the tests start
inherit it.  An XLA_FLAGS that already sets the device count wins.

JAX's persistent compilation cache (`tests.helpers.JAX_CACHE_ENV`) for this process and, through
the environment, every binary, worker and notebook kernel the tests start: the same tiny programs
compile once per machine, not once per test.  A JAX_COMPILATION_CACHE_DIR already set wins.
Likewise the resized embedded photos (`rl_align.data.cache`, about 3 s a process) are kept in
`tests.helpers.DATA_CACHE_DIR` (not the user's ~/.cache); an RL_ALIGN_CACHE_DIR already set wins.

Every binary a test starts measures the machine's fp32 matmul peak for run.json
(`rl_align.machine`, about 3 s of every core by default): here it is timed once per method at the
first size (RL_ALIGN_MATMUL_PEAK_BUDGET_S=0, about 0.3 s; tests/test_accounting.py checks the
budget logic itself).  A value already set wins.

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
os.environ.setdefault("RL_ALIGN_MATMUL_PEAK_BUDGET_S", "0")
os.environ.setdefault("RL_ALIGN_CACHE_DIR", helpers.DATA_CACHE_DIR)


@pytest.fixture(scope="session")
def worker_launch(tmp_path_factory):
  """The one multi-process run of tests/multihost_worker.py that tests/test_multihost.py and
  tests/test_layouts.py check (`tests.multihost.launch`); its tests form one xdist group."""
  from tests import multihost  # pylint: disable=g-import-not-at-top

  return multihost.launch(str(tmp_path_factory.mktemp("worker_launch")))


@pytest.fixture(scope="session")
def sweep_one_task(tmp_path_factory):
  """(workdir, CompletedProcess) of one sweep through the eigenvalue-map binary, one task
  (`helpers.SPLIT_SWEEP`): tests/test_sweep.py's packed sweep and reference for a 2-task split,
  and tests/test_tensorboard.py's sweep; its tests form one xdist group."""
  wd = tmp_path_factory.mktemp("sweep_one_task")
  proc = helpers.run_module(
    "experiments.eigenvalue_map", helpers.SWEEP_CONFIG, f"--workdir={wd}", *helpers.SPLIT_SWEEP
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return wd, proc


def _module_fixtures(item) -> list[tuple[str, str]]:
  """(file, name) of the module-scoped fixtures defined in item's own file that item uses, and
  ("conftest", name) of the session-scoped ones of this file (shared by several files)."""
  defs = item._fixtureinfo.name2fixturedefs  # pylint: disable=protected-access
  here = item.nodeid.split("::")[0]
  out = []
  for name in item.fixturenames:
    d = defs.get(name, [None])[-1]
    if d is not None and d.scope == "module" and d.baseid == here:
      out.append((here, name))
    elif d is not None and d.scope == "session" and d.func.__module__ == __name__:
      out.append(("conftest", name))
  return sorted(out)


def _fixture_groups(items) -> dict:
  """item -> its xdist group: `file@fixture` (`conftest@fixture`), one group per set of fixtures
  (`_module_fixtures`) that some test uses together (connected components), so that each fixture
  runs once; None for a test without one."""
  parent = {}

  def root(k):
    while parent.setdefault(k, k) != k:
      k = parent[k]
    return k

  names = {}
  for item in items:
    names[item] = _module_fixtures(item)
    for a in names[item][1:]:
      parent[root(a)] = root(names[item][0])
  return {item: "@".join(root(ns[0])) if ns else None for item, ns in names.items()}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's worker reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
  """For pytest-xdist's `--dist loadgroup` (pytest.ini): the tests that share a module fixture
  (mostly one end-to-end run) or a session fixture of this file form one group, so that it runs
  once, on one worker (a file with two independent fixtures: two groups); every other test is
  scheduled alone.  The work units (a group, or a test alone) go out heaviest first, by a rough
  cost: 10 per slow test (an end-to-end run) and 1 per test, ties in the order of how many slow
  tests their file holds, then the files' own order (pytest.ini turns off xdist's reordering), so
  that the longest work starts early and quick tests fill the gaps at the end."""
  del config
  slow = collections.Counter()
  cost = collections.Counter()
  groups = _fixture_groups(items)
  unit = {}
  for item in items:
    if groups[item]:
      item.add_marker(pytest.mark.xdist_group(groups[item]))
    unit[item] = groups[item] or item.nodeid
    is_slow = item.get_closest_marker("slow") is not None
    slow[item.path] += is_slow
    cost[unit[item]] += 1 + 10 * is_slow
  first = {}
  for i, item in enumerate(items):
    first.setdefault(unit[item], i)
  items.sort(key=lambda item: (-cost[unit[item]], -slow[item.path], first[unit[item]]))
