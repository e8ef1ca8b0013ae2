"""The machine a run ran on: CPU model, cores, JAX backend and device, measured fp32 matmul rate.

A runtime means little without the machine it was measured on (the same "2 cores" label covers
machines 1.5-3x apart), so every binary records this next to its results (WORKDIR/run.json)::

    from rl_align import machine
    rec = machine.describe()
    # {"cpu_model": "Intel(R) Xeon(R) CPU @ 2.20GHz", "cores": 2, "jax_backend": "cpu",
    #  "device_kind": "cpu", "num_devices": 2, "fp32_matmul_gflops": 212.0, ...}

`fp32_matmul_gflops` is the machine's honest fp32 matmul peak, measured, not looked up: the best
rate of several ways to run float32 n x n matmuls with all of the machine, so a job's fraction of
it (the binaries' final `done:` line, `rl_align.flops`) is not flattered by a low peak:

- `jax_one_device`: a chain of matmuls in one jitted loop on the default device.  On CPU the
  binaries expose one XLA host device per core (experiments/host_devices.py), and one such device
  may not use all cores (it timed 121 and 175 GFLOP/s on the same kind of machine in two runs);
- `jax_all_devices`: the same chain on every local device at once (jit of a shard_map over a mesh
  of the local devices, total FLOPs of all devices counted); only with more than one device;
- `numpy`: NumPy's BLAS (OpenBLAS here, all its threads), on CPU only (on an accelerator the host's
  BLAS is not the device's rate).  OpenBLAS picks its kernels for the CPU it detects; the
  OPENBLAS_CORETYPE override is irrelevant here and the environment is left as it is: the record
  measures this process as it runs, and the jobs' work runs in XLA, not in OpenBLAS.

Each at n = 1024, 2048, 4096 on CPU (4096 and 8192 on accelerators), best of 3 timings of about
0.05 s or one matmul, within a budget of about 3 s for the whole measurement (sizes ascending,
at each size the method fastest at the previous size first; a size whose timing would pass the
budget is skipped).  The environment variable RL_ALIGN_MATMUL_PEAK_BUDGET_S sets another default
budget (the test suite sets 0: every method timed once at the first size, about 0.3 s on CPU,
in every binary it starts).  `fp32_matmul_detail` holds every method's rate per size (GFLOP/s),
`fp32_matmul_gflops` their max, `fp32_matmul_method` and `fp32_matmul_n` where it was reached.
Measured once per process.  Other jobs on the machine lower it (`load_average_1min`).  JAX runs at
XLA's default float32 precision, the engine's default (`train.matmul_precision = "default"`),
which uses TF32 tensor cores on NVIDIA Ampere and later: there it is the TF32 rate.
"""

import datetime
import functools
import os
import platform
import time

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np


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
  """a @ b @ ... @ b (reps dependent matmuls in one jitted loop): the program the JAX methods of
  matmul_peak time."""
  return jax.lax.fori_loop(0, reps, lambda _, c: c @ b, a)


CPU_SIZES = (1024, 2048, 4096)
ACCELERATOR_SIZES = (4096, 8192)
TARGET_S = 0.05  # a timing runs about this long (or one matmul, if longer)
MAX_REPS = 10_000
DEFAULT_BUDGET_S = 3.0
BUDGET_ENV = "RL_ALIGN_MATMUL_PEAK_BUDGET_S"  # another default budget (seconds), e.g. in tests


def _operands(n: int):
  """Float32 a ~ N(0, 1) and b ~ N(0, 1/n) (b keeps a chained product's scale at 1), host arrays."""
  rng = np.random.default_rng(0)
  a = rng.standard_normal((n, n), dtype=np.float32)
  b = rng.standard_normal((n, n), dtype=np.float32) / np.float32(n**0.5)
  return a, b


def _jax_one_device(a, b):
  """(run(reps) -> seconds, FLOPs per rep) for the matmul chain on the default device."""
  n = a.shape[0]
  a, b = jax.device_put(a), jax.device_put(b)
  compiled = matmul_chain.lower(a, b, 1).compile()  # compiled once; reps is a traced bound

  def run(reps: int) -> float:
    t = time.perf_counter()
    compiled(a, b, reps).block_until_ready()
    return time.perf_counter() - t

  return run, 2.0 * n**3


def _jax_all_devices(a, b):
  """The chain on every local device at once: (run, FLOPs per rep of all devices together)."""
  n, devices = a.shape[0], jax.local_devices()
  mesh = Mesh(np.array(devices), ("d",))
  sharded = NamedSharding(mesh, P("d"))
  stack = lambda v: jax.device_put(np.broadcast_to(v, (len(devices),) + v.shape), sharded)
  a, b = stack(a), stack(b)

  def chain(x, y, reps):  # one device's [1, n, n] block
    return jax.lax.fori_loop(0, reps, lambda _, c: (c[0] @ y[0])[None], x)

  fn = jax.jit(
    jax.shard_map(
      chain, mesh=mesh, in_specs=(P("d"), P("d"), P()), out_specs=P("d"), check_vma=False
    )
  )
  compiled = fn.lower(a, b, 1).compile()

  def run(reps: int) -> float:
    t = time.perf_counter()
    compiled(a, b, reps).block_until_ready()
    return time.perf_counter() - t

  return run, 2.0 * n**3 * len(devices)


def _numpy(a, b):
  """(run, FLOPs per rep) for NumPy's BLAS (np.matmul into a preallocated output)."""
  n = a.shape[0]
  out = np.empty_like(a)
  np.matmul(a[:512, :512], b[:512, :512])  # warm-up: OpenBLAS' thread pool

  def run(reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
      np.matmul(a, b, out=out)
    return time.perf_counter() - t

  return run, 2.0 * n**3


def methods() -> dict:
  """name -> builder(a, b) -> (run(reps) -> seconds, FLOPs per rep): the ways this machine is
  timed, on host operands a, b [n, n] (`_operands`)."""
  out = {"jax_one_device": _jax_one_device}
  if len(jax.local_devices()) > 1:
    out["jax_all_devices"] = _jax_all_devices
  if jax.default_backend() == "cpu":
    out["numpy"] = _numpy
  return out


def _rate(build, a, b, repeats: int, deadline: float) -> float:
  """Best GFLOP/s of `repeats` timings of about TARGET_S each (or one rep); the first timing
  always runs, later ones stop at the deadline."""
  run, flops = build(a, b)
  one = run(1)
  reps = max(1, min(MAX_REPS, round(TARGET_S / max(one, 1e-6))))
  times = [one] if reps == 1 else []
  while len(times) < repeats and not (times and time.perf_counter() + one * reps > deadline):
    times.append(run(reps) / reps)
  return flops / min(times) / 1e9


def matmul_peak(sizes=None, repeats: int = 3, budget_s: float | None = None) -> dict:
  """The honest fp32 matmul peak (module docstring): {gflops, method, n, detail, seconds}, with
  detail = {method: {str(n): GFLOP/s}} for every (method, size) timed within the budget (default
  3 s, or RL_ALIGN_MATMUL_PEAK_BUDGET_S)."""
  if budget_s is None:
    budget_s = float(os.environ.get(BUDGET_ENV) or DEFAULT_BUDGET_S)
  if sizes is None:
    sizes = CPU_SIZES if jax.default_backend() == "cpu" else ACCELERATOR_SIZES
  t0 = time.perf_counter()
  deadline = t0 + budget_s
  builders = methods()
  detail = {name: {} for name in builders}
  last = {name: None for name in builders}  # GFLOP/s at the previous size
  for n in sorted(sizes):
    operands = None
    for name in sorted(builders, key=lambda k: -(last[k] or 0.0)):
      # Skip a size whose first timing would pass the budget (rate known from the size before;
      # the first size of each method always runs).
      if last[name] and time.perf_counter() + 2.0 * n**3 / (last[name] * 1e9) > deadline:
        continue
      operands = operands or _operands(n)
      rate = _rate(builders[name], *operands, repeats, deadline)
      detail[name][str(n)] = round(rate, 1)
      last[name] = rate
  best = max(((r, name, int(n)) for name, d in detail.items() for n, r in d.items()))
  return {
    "gflops": best[0],
    "method": best[1],
    "n": best[2],
    "detail": detail,
    "seconds": round(time.perf_counter() - t0, 2),
  }


@functools.lru_cache(maxsize=1)
def _measured_once() -> tuple:
  """(when, matmul_peak()) of the process's first call."""
  at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  return at, matmul_peak()


def describe(measure: bool = True) -> dict:
  """The machine record: CPU, cores, JAX backend/devices and (measure=True) the fp32 matmul peak.

  The rate is measured on the first call of the process and reused after (`measured_at` says when);
  `load_average_1min` above `cores` means other jobs shared the machine.
  """
  devices = jax.devices()
  rec = {
    "cpu_model": cpu_model(),
    "cores": cores(),
    "jax_backend": jax.default_backend(),
    "device_kind": devices[0].device_kind,
    "num_devices": len(devices),
    "process_count": jax.process_count(),
    "jax_version": jax.__version__,
    "python": platform.python_version(),
  }
  if measure:
    at, mm = _measured_once()
    rec.update(
      fp32_matmul_gflops=round(mm["gflops"], 1),
      fp32_matmul_method=mm["method"],
      fp32_matmul_n=mm["n"],
      fp32_matmul_detail=mm["detail"],
      fp32_matmul_seconds=mm["seconds"],
      measured_at=at,
    )
  if hasattr(os, "getloadavg"):  # > cores: other jobs shared the machine (and the measurement)
    rec["load_average_1min"] = round(os.getloadavg()[0], 2)
  return rec
