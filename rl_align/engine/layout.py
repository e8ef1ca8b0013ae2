"""Layout policy: how members run on the devices, chosen per backend and model from measurements.

A layout is two choices (`Layout`): how the per-member function is lifted over the members of a
device (`lift`: vmap | unroll | map) and which convolution implementation a conv model runs
(`conv_impl`: lax | im2col | fused | pallas, `rl_align.models`; None for models without
convolutions).  `choose_layout` makes both for `member_lift="auto"` / `conv_impl="auto"`,
`choose_devices` the device count, `choose_microbatch` the gradient micro-batch.  `resolve` refuses
a layout a platform cannot run (`UNSUPPORTED`); `pinned_config` fixes a config to what a platform
would run, so that this host can build (and lower for that platform) the same program.
"""

from typing import Callable, NamedTuple

from absl import logging
import jax
from jax import lax
import jax.numpy as jnp

from rl_align import errors
from rl_align import models

MEMBER_LIFTS = ("vmap", "unroll", "map")
CONV_IMPLS = models.CONV_IMPLS


# (platform, conv_impl) -> why that platform cannot run it.  `choose_layout` never picks these and
# `resolve` refuses them; tests/test_lowering.py lowers every other layout for "cuda" and "tpu".
UNSUPPORTED = {
  ("tpu", "pallas"): "the Pallas block (rl_align.pallas_fused) has Triton kernels for GPUs only; "
  "no Mosaic TPU kernels are written, and its Triton compiler parameters do "
  "not lower for TPU",
}


def device_platform(platform: str) -> str:
  """A device's platform as `jax.Device.platform` names it: "cpu", "gpu" or "tpu" (the lowering
  platforms "cuda" and "rocm" are "gpu")."""
  return "gpu" if platform in ("cuda", "rocm") else platform


class Layout(NamedTuple):
  lift: str  # vmap | unroll | map
  conv_impl: str | None  # the conv models' implementation; None: the model has no convolutions

  @property
  def name(self) -> str:
    """ "map", "map_fused", ...: the label results and benchmarks carry."""
    return self.lift if self.conv_impl is None else f"{self.lift}_{self.conv_impl}"


def choose_layout(model, platform: str) -> Layout:
  """The layout for `member_lift="auto"` and `conv_impl="auto"`, from benchmarks/train_throughput.py.

  Measured on a 2-core XLA:CPU (benchmarks/README.md; model-steps/s at S=16):
  - conv models: map over im2col 2.46 vs unroll 0.25, map over lax convs 0.26 and vmap over an
    im2col model 0.92 (paper CNN, F=256); XLA:CPU runs a lax convolution inside a loop body ~10x
    slower than at top level, and vmap over conv kernels is a grouped convolution.
  - dense nets (Fig 20): member-major `map` 692 vs `vmap` 587 (S=64: 708 vs 505): each member's
    parameters stay in cache for a whole chunk of steps.
  - the paper CNN: map over `fused` (conv -> ReLU -> dense as one cache-blocked op,
    `rl_align.fused`) 5.55 vs map over im2col 2.80 (S=1: 6.08 vs 2.50).  The same at every S in
    {1, 8, 16, 64}.
  So CPU runs every model member-major with lax.map, conv models as conv-as-matmul (`fused`: the
  paper CNN's first block fused, every other conv model as `im2col`).

  Measured on one H200 GPU (benchmarks/gpu_throughput.sh; model-steps/s at S=64):
  - paper CNN: vmap over im2col 1346 vs vmap over lax convs (cuDNN grouped convs) 536, map 841,
    vmap over the fused block 975, map over fused 436.
  - small CNN: vmap over im2col 2256 / map 2355 / vmap over lax 1095 (S=16: 2558 / 2282 / 1005).
  - dense net: vmap 95773 vs map 12045.
  So accelerators run vmap, conv models as conv-as-matmul (`im2col`).  TPU is not measured and
  follows the GPU choice.  Never a layout of `UNSUPPORTED` (every choice here lowers for "cuda" and
  "tpu": tests/test_lowering.py).
  """
  conv = models.is_conv_model(model)
  if device_platform(platform) != "cpu":
    return Layout("vmap", "im2col" if conv else None)
  return Layout("map", "fused" if conv else None)


def resolve(model, cfg, platform: str):
  """(the model the engine runs, its Layout) for the config's `member_lift` and `conv_impl`.

  A conv_impl the platform cannot run (`UNSUPPORTED`) is a ConfigError naming the platform and the
  fix, raised before anything is traced::

      resolve(models.PaperCNN(), cfg, "tpu")   # cfg.conv_impl="pallas": ConfigError
  """
  auto = choose_layout(model, platform)
  lift = auto.lift if cfg.member_lift == "auto" else cfg.member_lift
  if not models.is_conv_model(model):
    return model, Layout(lift, None)
  impl = auto.conv_impl if cfg.conv_impl == "auto" else cfg.conv_impl
  why = UNSUPPORTED.get((device_platform(platform), impl))
  if why is not None:
    raise errors.ConfigError(
      f"conv_impl={impl!r} cannot run on {device_platform(platform)}: {why}. Fix: the engine "
      f"config's conv_impl='auto' (--config.train.conv_impl=auto; it picks {auto.conv_impl!r} "
      f"there) or another of "
      f"{tuple(i for i in CONV_IMPLS if (device_platform(platform), i) not in UNSUPPORTED)}."
    )
  if platform == "cpu" and impl == "lax":
    logging.warning(
      "conv_impl='lax' runs lax convolutions inside a loop on XLA:CPU, measured ~10x "
      "slower than conv_impl='fused' (the 'auto' choice on CPU)."
    )
  if model.conv_impl != impl:
    model = model.clone(conv_impl=impl)
  return model, Layout(lift, impl)


def pinned_config(model, cfg, platform: str, example_shape):
  """A copy of the engine config `cfg` with `member_lift`, `conv_impl` and `grad_microbatch` set
  to what the engine resolves for `model` on `platform` ("cpu", "gpu", "tpu"; or "cuda" / "rocm"),
  so that an Engine built on THIS host runs the program that platform would run: what
  tests/test_lowering.py lowers for a platform this host does not have::

      cfg_tpu = layout.pinned_config(model, cfg, "tpu", x.shape[1:])
      eng = core.Engine(model, cfg_tpu, x.shape, n_members)      # the TPU program, on the CPU

  Raises `resolve`'s ConfigError for a conv_impl the platform cannot run.  (On a CPU host an
  Engine pinned to `lax` convolutions logs `resolve`'s CPU warning: it is not for running here.)
  """
  platform = device_platform(platform)
  run_model, lay = resolve(model, cfg, platform)
  shapes = jax.eval_shape(
    run_model.init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1,) + tuple(example_shape), jnp.float32),
  )
  n_params = sum(int(a.size) for a in jax.tree.leaves(shapes))
  micro = int(cfg.get("grad_microbatch", 0)) or choose_microbatch(
    platform,
    n_params,
    models.is_conv_model(run_model),
    cfg.batch_size,
    getattr(run_model, "blocks_in_cache", False),
  )
  out = cfg.copy_and_resolve_references()
  out.member_lift, out.grad_microbatch = lay.lift, micro
  if lay.conv_impl is not None:
    out.conv_impl = lay.conv_impl
  return out


def lift_members(fn: Callable, lift: str) -> Callable:
  """Lifts fn(*one_member_args) to stacked args (leading member axis): vmap, lax.map or unrolled."""
  if lift == "vmap":
    return jax.vmap(fn)
  if lift == "map":
    return lambda *args: lax.map(lambda a: fn(*a), args)

  def unrolled(*args):
    s = jax.tree.leaves(args)[0].shape[0]
    outs = [fn(*jax.tree.map(lambda a, i=i: a[i], args)) for i in range(s)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

  return unrolled


# The most padding `choose_devices` accepts, as a share of the padded members.
MAX_PADDING = 1 / 8


def choose_devices(available: int, n_members: int, requested: int = 0) -> int:
  """How many devices the members are sharded over: `num_devices` if > 0 (never more than exist
  or than the members); else the most devices whose padding is at most MAX_PADDING of the padded
  members.  Every device holds as many members, so 5 members on 2 devices run as 6, and the sixth
  is wasted work; one device needs no padding (its matmuls still use every core).  Measured on 2
  CPU cores (benchmarks/main_job.py, Fig 20 left, engine steps alone, model-steps/s of the 5 real
  members): one device 271 / 272 vs two devices padded to 6: 257 / 250 (the fused paper CNN
  earlier: one device 4.93 / 5.55 / 5.62 vs two 3.71 / 5.69 / 5.31 with an even member count, no
  reliable difference; benchmarks/README.md)."""
  if requested > 0:
    return max(1, min(requested, available, n_members))
  for d in range(max(1, min(available, n_members)), 0, -1):
    padded = -(-n_members // d) * d
    if padded - n_members <= MAX_PADDING * padded:
      return d
  return 1


def choose_microbatch(
  platform: str, n_params: int, is_conv: bool, batch_size: int, blocks_in_cache: bool = False
) -> int:
  """Examples per gradient micro-batch for `grad_microbatch=0` (the full batch: no micro-batching).

  A step's gradient is the mean of its micro-batches' gradients (a `lax.scan`), the same value up
  to float32 summation order.  It pays where a conv net's activations dwarf its parameters: each
  micro-batch's patches and activations stay in cache, while every micro-batch adds one pass over
  the gradient accumulator.  Measured on the 2-core CPU (benchmarks/README.md), one member's
  gradient on one core: small CNN (20 K params, batch 128) 300 ms full batch vs 120 / 121 / 128 /
  135 / 172 / 207 ms in micro-batches of 1 / 2 / 4 / 8 / 16 / 32; in the engine (S=16, both cores)
  10.5 model-steps/s full batch vs 18.4 in micro-batches of 2.  The paper CNN (14.7 M params) was
  slower in micro-batches (its fused, cache-blocked step 262 ms vs 473 in 32s), and so was the Fig 20
  dense net (engine, S=16: 647 model-steps/s full batch vs 590 / 559 in 64s / 32s).  Each micro-batch
  adds a pass over the gradient accumulator, so on CPU a conv net whose step is not already
  cache-blocked (`blocks_in_cache`) uses the smallest micro-batch m dividing the batch with
  n_params / m <= 2**14 (the accumulator's floats per example, 64 KiB; calibrated on the small CNN
  alone: m=2).  Nets with more than 2**14 x batch_size parameters, dense nets and GPUs (where the
  full batch keeps the kernels wide) use the full batch.
  """
  if platform != "cpu" or not is_conv or blocks_in_cache:
    return batch_size
  return min(
    m
    for m in range(1, batch_size + 1)
    if batch_size % m == 0 and (n_params <= 2**14 * m or m == batch_size)
  )
