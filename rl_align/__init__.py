"""rl_align: what neural networks learn when trained with random labels (Maennel et al. 2020).

Library modules are pure (no flags, no I/O side effects beyond the workdir helpers in
``rl_align.results``) and importable from Colab::

    from rl_align import data, covariance, alignment
    ds = data.load("gaussian", n=10_000, stds=[0.1 * i for i in range(1, 31)])
    mean, cov_x = covariance.data_covariance(ds.x)

Importing rl_align sets nothing process-wide (no XLA_FLAGS, no jax config).  On CPU, XLA runs each
convolution on one core of one device, and the multi-seed engine (``rl_align.train``) shards its
seeds over the devices; to get one XLA host device per core, set XLA_FLAGS before jax initializes
its backends (at the first device use, e.g. ``jax.devices()`` or the first array), e.g. in a
Colab's first cell::

    import os
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count()}")

The binaries in experiments/ do this for you (``experiments.host_devices``, unless XLA_FLAGS
already sets the device count), and so does tests/conftest.py for the tests.  Only the CPU platform
is affected.
"""

__version__ = "0.1.0"
