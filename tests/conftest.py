"""Process-wide test setup, done once per pytest process (each xdist worker loads this first).

One XLA host device per core, as the binaries get it (`experiments.host_devices`; the library never
sets XLA_FLAGS): set here, before any test module initializes jax's backends, so the multi-device
engine paths (seeds sharded over devices) run on a multi-core machine; subprocesses the tests start
inherit it.  An XLA_FLAGS that already sets the device count wins.  Shared helpers: tests/helpers.py.
"""
from experiments import host_devices

host_devices.expose_host_cores()
