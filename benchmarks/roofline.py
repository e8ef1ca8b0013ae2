"""A roofline for one model-step: FLOPs, device-memory bytes, the device's measured limits, the floor.

    from benchmarks import roofline
    flops = roofline.dot_conv_flops(jax.make_jaxpr(step)(*args).jaxpr)
    acts = roofline.activation_elements(model, (32, 32, 3))      # {layer: ReLU output per example}
    b = roofline.step_bytes(n_params, 256, 32 * 32 * 3, sum(acts.values()), act_bytes=2)
    peak = roofline.measure_matmul_peak(8192, "bfloat16")        # FLOP/s, timed now
    bw = roofline.measure_bandwidth(2 ** 31)                      # bytes/s of a copy, timed now
    floor = roofline.floor(flops, b["total"], peak, bw)          # {"seconds", "bound", ...}
    roofline.fraction_of_floor(measured_s_per_model_step, floor["seconds"])   # 1.0 = at the limit

A model-step is one SGD step of one seed.  Its floor is max(FLOPs / matmul peak, bytes / memory
bandwidth), with the peak and bandwidth measured on the same device in the same run; the engine's
fraction of the floor (floor time / measured time) makes "close to the limit" a number.

FLOPs: 2 x multiply-adds of every dot_general and convolution in the step's jaxpr (sub-jaxprs
included; a scan body counts `length` times), counted by `rl_align.flops.dot_conv_flops` (the
library's counter, which the binaries' run accounting uses too).  Count them on a straight-line
step (the naive per-seed step with lax convolutions): other loops and Pallas kernels are counted
once per appearance, not per iteration or program.  The floor uses these nominal FLOPs, so work a
layout adds (e.g. the fused kernels' recomputed forward) lowers its fraction instead of raising
the floor.

Bytes (`step_bytes`) are an explicit estimate of the traffic a step cannot avoid, per model-step:
- parameters (float32): read by the forward and by the backward, 2 x 4 B each (a bfloat16 cast
  is assumed fused into the read);
- gradients (float32): written by the backward, read by the optimizer, 2 x 4 B;
- optimizer: parameters and each state slot (momentum: 1, Adam: 2) read and written, 2 x 4 B each;
  so SGD+momentum moves 32 B per parameter;
- inputs: the batch read once (float32) and its integer labels;
- activations that reach device memory, ACTIVATION_PASSES = 5 passes each: written by their
  layer, read by the next layer's forward and by the backward; their gradient written and read;
- im2col patches of the data (conv-as-matmul layouts), PATCH_PASSES = 3: written, read by the
  forward and by the kernel gradient (data needs no gradient).
A fused layout leaves out the activation it keeps on chip (the paper CNN's conv output).  Caches,
re-reads within a layer and XLA's extra copies are not modelled: real traffic is higher.
"""

import time
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from rl_align import flops as flops_lib
from rl_align import models

ACTIVATION_PASSES = 5
PATCH_PASSES = 3
PARAM_BYTES = 4


# ----------------------------------------------------------------------------------------------
# FLOPs.


# The counter lives in the library (rl_align.flops): the engine's run accounting uses it too.
dot_conv_flops = flops_lib.dot_conv_flops


# ----------------------------------------------------------------------------------------------
# Bytes.


def activation_elements(model, input_shape: Iterable[int]) -> dict[str, int]:
  """{layer: elements per example of its ReLU output}: the activations a step keeps for its
  backward pass (the next layer's input; the ReLU's mask is its sign).  Layers without a ReLU (the
  head, residual shortcuts) and pooled features are left out.  Shapes only (jax.eval_shape)."""
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  acts = jax.eval_shape(lambda p, v: models.activations(model, p, v), params, x)
  return {name: int(np.prod(a["relu"].shape[1:])) for name, a in acts.items() if "relu" in a}


def patch_elements(model, input_shape: Iterable[int]) -> int:
  """Elements per example of the im2col patches of the model's first conv (k*k*C per output
  position; 0 for a model without convolutions).  Later convs' patches are not counted."""
  if not models.is_conv_model(model):
    return 0
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  acts = jax.eval_shape(lambda p, v: models.activations(model, p, v), params, x)
  first = models.first_layer_name(params)
  k, _, c, _ = params[first]["kernel"].shape
  out = acts[first].get("relu", acts[first]["inputs"])
  return int(k * k * c * np.prod(out.shape[1:3]))


def step_bytes(
  n_params: int,
  batch: int,
  input_elements: int,
  activation_elements: int,
  *,
  act_bytes: int = 4,
  opt_slots: int = 1,
  patch_elements: int = 0,
) -> dict[str, float]:
  """Device-memory bytes of one model-step, by kind, and their "total" (module docstring).

  n_params: parameters; batch: examples per step; input_elements, activation_elements and
  patch_elements: per example (activations that reach device memory; patches 0 without im2col);
  act_bytes: bytes per activation element (4 float32, 2 bfloat16); opt_slots: optimizer state
  arrays per parameter (SGD 0, momentum 1, Adam 2).
  """
  out = {
    "parameters": 2.0 * n_params * PARAM_BYTES,
    "gradients": 2.0 * n_params * PARAM_BYTES,
    "optimizer": 2.0 * (1 + opt_slots) * n_params * PARAM_BYTES,
    "inputs": float(batch) * (input_elements * 4 + 4),
    "activations": float(ACTIVATION_PASSES) * batch * activation_elements * act_bytes,
    "patches": float(PATCH_PASSES) * batch * patch_elements * act_bytes,
  }
  out["total"] = sum(out.values())
  return out


# ----------------------------------------------------------------------------------------------
# The floor.


def floor(
  flops: float, n_bytes: float, peak_flops_per_s: float, bytes_per_s: float
) -> dict[str, Any]:
  """The roofline floor of one step: max(compute time, memory time) and which one binds."""
  compute, memory = flops / peak_flops_per_s, n_bytes / bytes_per_s
  return {
    "seconds": max(compute, memory),
    "compute_s": compute,
    "memory_s": memory,
    "bound": "compute" if compute >= memory else "memory",
    "arithmetic_intensity": flops / n_bytes if n_bytes else float("inf"),
  }


def fraction_of_floor(seconds: float, floor_seconds: float) -> float:
  """floor / measured: 1.0 is at the roofline, 0.1 is 10x slower than it."""
  return floor_seconds / seconds


# ----------------------------------------------------------------------------------------------
# Measurements (timed on the default device; not pure).


def _best_seconds(fn, reps: int) -> float:
  jax.block_until_ready(fn())
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return min(times)


def measure_matmul_peak(n: int = 8192, dtype: str = "float32", reps: int = 3) -> float:
  """FLOP/s of the best of `reps` jitted n x n matmuls in `dtype` at XLA's default precision
  (float32 runs as TF32 on NVIDIA Ampere and later)."""
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.standard_normal((n, n), dtype=np.float32), dtype) for _ in range(2))
  mm = jax.jit(jnp.matmul)
  return 2.0 * n**3 / _best_seconds(lambda: mm(a, b), reps)


def measure_bandwidth(n_bytes: int = 2**30, reps: int = 3) -> float:
  """Device-memory bytes/s of the best of `reps` jitted copies y = x + 1 of a float32 array of
  n_bytes (read once, written once: 2 x n_bytes moved)."""
  x = jnp.zeros((max(int(n_bytes) // 4, 1),), jnp.float32)
  copy = jax.jit(lambda v: v + 1.0)
  return 2.0 * x.size * 4 / _best_seconds(lambda: copy(x), reps)


def row(
  seconds_per_model_step: float,
  flops: float,
  bytes_by_kind: Mapping[str, float],
  peak_flops_per_s: float,
  bytes_per_s: float,
) -> dict[str, Any]:
  """The roofline fields of one benchmark row (a JSON-ready dict)."""
  f = floor(flops, bytes_by_kind["total"], peak_flops_per_s, bytes_per_s)
  return {
    "flops": flops,
    "bytes": dict(bytes_by_kind),
    "peak_flops_per_s": peak_flops_per_s,
    "bandwidth_bytes_per_s": bytes_per_s,
    "floor_s": f["seconds"],
    "compute_s": f["compute_s"],
    "memory_s": f["memory_s"],
    "bound": f["bound"],
    "fraction_of_floor": fraction_of_floor(seconds_per_model_step, f["seconds"]),
  }
