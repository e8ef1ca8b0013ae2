"""The machine a run ran on: CPU model, cores, JAX backend and device, measured fp32 matmul rate.

A runtime means little without the machine it was measured on (the same "2 cores" label covers
machines 1.5-3x apart), so every binary records this next to its results (WORKDIR/run.json)::

    from rl_align import machine
    rec = machine.describe()
    # {"cpu_model": "Intel(R) Xeon(R) CPU @ 2.20GHz", "cores": 2, "jax_backend": "cpu",
    #  "device_kind": "cpu", "num_devices": 2, "fp32_matmul_gflops": 212.0, ...}

`fp32_matmul_gflops` is measured, not looked up: a chain of float32 n x n matmuls (n = 2048 on CPU,
8192 on accelerators) in one jitted loop on the default device, about 0.2 s per timing, best of 5
(about 1 s of work, measured once per process).  It runs at XLA's default float32 precision, the
engine's default (`train.matmul_precision = "default"`), which uses TF32 tensor cores on NVIDIA
Ampere and later: there it is the TF32 rate.
"""
import datetime
import functools
import os
import platform
import time

import jax
import jax.numpy as jnp


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo on Linux, else platform), e.g. 'AMD EPYC 7B13'."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model") and value.strip():
          return value.strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown"


def cores() -> int:
  """CPU cores this process may run on (its affinity mask, not the host's total)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


@jax.jit
def matmul_chain(a, b, reps):
  """a @ b @ ... @ b (reps dependent matmuls in one jitted loop): the program matmul_gflops times."""
  return jax.lax.fori_loop(0, reps, lambda _, c: c @ b, a)


def matmul_gflops(n: int | None = None, seconds: float = 0.2, repeats: int = 5) -> dict:
  """Best float32 matmul rate of the default device: {gflops, n, reps, best_s}.

  Each timing runs `reps` dependent n x n matmuls in one jitted loop (reps chosen so a timing takes
  about `seconds`); b ~ N(0, 1/n) keeps the chained product's scale at 1.
  """
  if n is None:
    n = 2048 if jax.default_backend() == "cpu" else 8192
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), jnp.float32)
  b = jax.random.normal(kb, (n, n), jnp.float32) / n ** 0.5

  def timed(reps: int) -> float:
    t = time.perf_counter()
    matmul_chain(a, b, reps).block_until_ready()
    return time.perf_counter() - t

  timed(1)                                    # compile and warm up
  reps = max(1, min(100_000, round(seconds / max(timed(1), 1e-6))))
  best = min(timed(reps) for _ in range(repeats))
  return {"gflops": 2 * n ** 3 * reps / best / 1e9, "n": n, "reps": reps, "best_s": best}


@functools.lru_cache(maxsize=1)
def _measured_once() -> tuple:
  at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  return at, matmul_gflops()


def describe(measure: bool = True) -> dict:
  """The machine record: CPU, cores, JAX backend/devices and (measure=True) the fp32 matmul rate.

  The rate is measured on the first call of the process and reused after (`measured_at` says when);
  `load_average_1min` above `cores` means other jobs shared the machine.
  """
  devices = jax.devices()
  rec = {"cpu_model": cpu_model(), "cores": cores(), "jax_backend": jax.default_backend(),
         "device_kind": devices[0].device_kind, "num_devices": len(devices),
         "process_count": jax.process_count(), "jax_version": jax.__version__,
         "python": platform.python_version()}
  if measure:
    at, mm = _measured_once()
    rec.update(fp32_matmul_gflops=round(mm["gflops"], 1), fp32_matmul_n=mm["n"],
               measured_at=at)
  if hasattr(os, "getloadavg"):   # > cores: other jobs shared the machine (and the measurement)
    rec["load_average_1min"] = round(os.getloadavg()[0], 2)
  return rec
