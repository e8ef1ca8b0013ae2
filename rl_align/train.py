"""The multi-seed training engine: S independent trainings of one model, at once, on every device.

Each seed s (an integer id) has its own init key, its own data order and, when the caller asks for
random labels, its own label draw, all derived from one root seed with ``fold_in``; so seed s trained
alone gives the same result as seed s trained inside a batch of seeds.  Seeds are sharded over all
devices (on CPU rl_align exposes one XLA device per core, see ``rl_align/__init__``); inside a device
the seeds run in a *layout* chosen per backend and model from measurements (``choose_layout``), and
on CPU a small conv net's gradient is summed over micro-batches that stay in cache
(``choose_microbatch``).

Usage::

    from rl_align import models, train
    cfg = train.default_config()
    cfg.num_seeds, cfg.num_epochs, cfg.batch_size = 8, 5, 128
    model = models.DenseNet(widths=(2048, 256))
    labels = train.random_labels(cfg.seed, train.seed_ids(cfg), n=len(x), num_classes=10)  # [S, N]
    res = train.train(model, cfg, x, labels, workdir="/tmp/run")   # resumes if /tmp/run has a checkpoint
    res.params            # stacked numpy params, leading axis = seed
    res.snapshots[step]   # {"first_kernel": [S, ...]} at cfg.snapshot_steps / snapshot_epochs
    res.metrics           # rows {"phase", "step", "epoch", "seed", "loss", "batch_accuracy", ...}

Every logged step appends one row per seed to ``workdir/metrics.jsonl`` and logs steps/s and ETA.
A seed whose loss or gradient turns non-finite is frozen at its last finite parameters and flagged in
``res.diverged`` / ``res.diverged_step``; the other seeds finish.
"""
import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import threading
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from absl import logging
import flax.linen as nn
import jax
from jax import lax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax

from rl_align import errors
from rl_align import progress as progress_lib
from rl_align import results as results_lib

OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")
LAYOUTS = ("auto", "vmap", "unroll", "map", "map_im2col", "map_fused", "vmap_im2col")
# Engine-config fields a member of a packed sweep may carry its own value of (`Members`).
MEMBER_HPARAMS = ("learning_rate", "momentum", "weight_decay")
SEED_AXIS = "seed"
# fold_in tags of the per-seed streams.
INIT_STREAM, DATA_STREAM, LABEL_STREAM = 1, 2, 3


def default_config() -> ml_collections.ConfigDict:
  """Engine defaults; every field can be overridden from an experiment config."""
  c = ml_collections.ConfigDict()
  c.optimizer = "momentum"          # sgd | momentum | adam (adam breaks the rotation symmetry)
  c.learning_rate = 0.01
  c.momentum = 0.9
  c.nesterov = False
  c.weight_decay = 0.0              # L2 decay added to the gradient (rotation-equivariant)
  c.schedule = "constant"           # constant | cosine | warmup_cosine | step
  c.warmup_steps = 0
  c.step_boundaries = ()            # fractions of training where lr *= step_factor (schedule=step)
  c.step_factor = 0.1
  c.batch_size = 128
  c.num_epochs = 10
  c.num_steps = 0                   # > 0 overrides num_epochs
  c.num_seeds = 1
  c.seed = 0                        # root seed; seed ids are seed_offset .. seed_offset+num_seeds-1
  c.seed_offset = 0
  c.seed_layout = "auto"            # auto | vmap | unroll | map | map_im2col | map_fused | vmap_im2col
  c.num_devices = 0                 # devices the seeds are sharded over; 0: all (choose_devices)
  c.grad_microbatch = 0             # examples per gradient micro-batch; 0: auto (choose_microbatch)
  c.log_every_steps = 0             # 0: once per epoch
  c.eval_every_steps = 0            # 0: at every log step
  c.train_eval_examples = 2048      # train accuracy is measured on this many training examples
  c.eval_batch_size = 1024
  c.snapshot_steps = ()
  c.snapshot_epochs = ()
  c.checkpoint_every_secs = 60.0    # checkpoint at the first log step after this many seconds
  c.matmul_precision = "default"    # default | high | highest
  return c


# ----------------------------------------------------------------------------------------------
# Keys, labels, validation.


def seed_ids(cfg) -> list[int]:
  return list(range(cfg.seed_offset, cfg.seed_offset + cfg.num_seeds))


def seed_key(root_seed: int, seed_id: int, stream: int):
  """The key of one seed's stream (init, data order or labels): independent of the other seeds."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(root_seed), seed_id), stream)


def random_labels(root_seed: int, ids: Sequence[int], n: int, num_classes: int) -> np.ndarray:
  """[S, n] int32 uniform labels, one independent draw per seed id (fixed for the whole run)."""
  keys = jnp.stack([seed_key(root_seed, s, LABEL_STREAM) for s in ids])
  draw = jax.vmap(lambda k: jax.random.randint(k, (n,), 0, num_classes, dtype=jnp.int32))
  return np.asarray(draw(keys))


def total_steps(cfg, n: int) -> int:
  return cfg.num_steps if cfg.num_steps > 0 else cfg.num_epochs * (n // cfg.batch_size)


def is_feed(x) -> bool:
  """True for a host input pipeline (`rl_align.pipeline.HostFeed`) in place of an array x."""
  return hasattr(x, "chunks") and hasattr(x, "head") and hasattr(x, "source")


def _validate_feed(cfg, feed, labels) -> None:
  if labels is not None:
    raise errors.ConfigError("with a host feed the labels come from the feed: pass labels=None "
                             "(the feed's `labels`: RandomLabels or the source's).")
  if feed.batch_size != cfg.batch_size or feed.data_seed != cfg.seed:
    raise errors.ConfigError(
        f"the host feed draws batches of {feed.batch_size} in the order of root seed "
        f"{feed.data_seed}, but the config trains batch_size={cfg.batch_size}, seed={cfg.seed}. "
        "Fix: build the feed from the same engine config.")
  if list(feed.seed_ids) != seed_ids(cfg):
    raise errors.ConfigError(f"the host feed serves seed ids {list(feed.seed_ids)}, the config "
                             f"trains {seed_ids(cfg)}. Fix: HostFeed(seed_ids=train.seed_ids(cfg)).")
  if isinstance(feed.labels, np.ndarray) and feed.labels.ndim == 2:
    raise errors.ConfigError("a host feed with a per-member label table cannot be re-sharded over "
                             "devices. Fix: pass pipeline.RandomLabels(root_seed, K) (labels from "
                             "a function of the example index) or shared labels [N].")
  if not 1 <= cfg.batch_size <= feed.n:
    raise errors.ConfigError(f"config.batch_size: must be in [1, N={feed.n}], got {cfg.batch_size}.")


def validate(cfg, model, x, labels) -> None:
  """Raises ConfigError / DataError with the fix, before anything is compiled."""
  def bad(field, msg):
    raise errors.ConfigError(f"config.{field}: {msg}")
  if not isinstance(model, nn.Module):
    raise errors.ConfigError(f"model must be a flax.linen Module, got {type(model).__name__}. "
                             "Fix: build it with rl_align.models.build(config.model).")
  if cfg.optimizer not in OPTIMIZERS:
    bad("optimizer", f"unknown value {cfg.optimizer!r}; choose one of {OPTIMIZERS}.")
  if cfg.schedule not in SCHEDULES:
    bad("schedule", f"unknown value {cfg.schedule!r}; choose one of {SCHEDULES}.")
  if cfg.seed_layout not in LAYOUTS:
    bad("seed_layout", f"unknown value {cfg.seed_layout!r}; choose one of {LAYOUTS}.")
  if int(cfg.get("num_devices", 0)) < 0:
    bad("num_devices", f"must be >= 0 (0: automatic), got {cfg.num_devices}.")
  m = int(cfg.get("grad_microbatch", 0))
  if m < 0 or (m and cfg.batch_size % m):
    bad("grad_microbatch", f"must be 0 (automatic) or a divisor of batch_size={cfg.batch_size}, "
        f"got {m}. Fix: e.g. --config.grad_microbatch=0.")
  if int(cfg.num_seeds) < 1:
    bad("num_seeds", f"must be >= 1, got {cfg.num_seeds}. Fix: e.g. --config.num_seeds=8.")
  if not cfg.learning_rate > 0:
    bad("learning_rate", f"must be > 0, got {cfg.learning_rate}.")
  if is_feed(x):
    _validate_feed(cfg, x, labels)
    return
  x = np.asarray(x) if not hasattr(x, "shape") else x
  if x.ndim < 2:
    raise errors.DataError(f"training inputs must be [N, ...] with N examples, got shape {x.shape}.")
  n = x.shape[0]
  if not 1 <= cfg.batch_size <= n:
    bad("batch_size", f"must be in [1, N={n}] (the training set size), got {cfg.batch_size}. "
        f"Fix: --config.batch_size={min(n, 128)} or use more training examples.")
  if cfg.num_steps <= 0 and cfg.num_epochs <= 0:
    bad("num_epochs", "num_epochs and num_steps are both <= 0: nothing to train.")
  if not np.issubdtype(x.dtype, np.floating):
    raise errors.DataError(f"training inputs must be floating point, got {x.dtype}. "
                           "Fix: convert images to float32 (e.g. x / 255.) and standardize.")
  if not np.all(np.isfinite(np.asarray(x))):
    raise errors.DataError("training inputs contain NaN or inf values. Fix: clean the data "
                           "(rl_align.data.check_finite shows where) before training.")
  lab = np.asarray(labels)
  if lab.ndim not in (1, 2) or lab.shape[-1] != n:
    raise errors.DataError(f"labels must be [N] or [num_seeds, N] with N={n}, got {lab.shape}.")
  if lab.ndim == 2 and lab.shape[0] != cfg.num_seeds:
    raise errors.DataError(f"per-seed labels have {lab.shape[0]} rows but num_seeds={cfg.num_seeds}.")
  if not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0:
    raise errors.DataError("labels must be non-negative integers (class ids).")
  k = getattr(model, "num_classes", None)
  if k is not None and lab.max() >= k:
    raise errors.DataError(f"a label is {lab.max()} but the model has num_classes={k}. "
                           f"Fix: set the model's num_classes to at least {lab.max() + 1}.")


# ----------------------------------------------------------------------------------------------
# Optimizer.


def make_optimizer(cfg, steps: int, hparams: Mapping[str, Any] | None = None,
                   with_decay: bool | None = None) -> optax.GradientTransformation:
  """SGD / momentum / Adam with an optax schedule; weight decay is L2 added to the gradient.

  `hparams` overrides the config's `learning_rate`, `momentum` and `weight_decay` with (possibly
  traced) per-member scalars: the engine builds each member's optimizer inside its step from them,
  so members of a packed sweep carry their own values.  The schedule's shape comes from the config
  and is scaled by the member's learning rate.  `with_decay` says whether the decay transform is
  part of the chain (it is whenever any member decays; a member with 0 adds 0 * params).  The
  optimizer *state* depends only on the structure, never on the values.
  """
  hp = {k: cfg[k] for k in MEMBER_HPARAMS}
  hp.update(hparams or {})
  lr = hp["learning_rate"]
  if cfg.schedule == "constant":
    sched = optax.constant_schedule(lr)
  elif cfg.schedule == "cosine":
    sched = optax.cosine_decay_schedule(lr, max(1, steps))
  elif cfg.schedule == "warmup_cosine":
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, cfg.warmup_steps), max(2, steps))
  else:
    bounds = {int(f * steps): cfg.step_factor for f in cfg.step_boundaries}
    sched = optax.piecewise_constant_schedule(lr, bounds)
  parts = []
  if bool(cfg.weight_decay) if with_decay is None else with_decay:
    parts.append(optax.add_decayed_weights(hp["weight_decay"]))
  if cfg.optimizer == "sgd":
    parts.append(optax.sgd(sched))
  elif cfg.optimizer == "momentum":
    parts.append(optax.sgd(sched, momentum=hp["momentum"], nesterov=cfg.nesterov))
  else:
    if hparams is None:   # the structural build (once per engine), not every member's trace
      logging.warning("optimizer=adam breaks the rotation symmetry the paper's proposition needs: "
                      "first-layer weights need not align with the data covariance.")
    parts.append(optax.adam(sched))
  return optax.chain(*parts)


# ----------------------------------------------------------------------------------------------
# Seed layouts.


def choose_layout(model, platform: str, seeds_per_device: int) -> str:
  """The per-device layout for `seed_layout="auto"`, from benchmarks/train_throughput.py.

  Measured on a 2-core XLA:CPU (benchmarks/README.md; model-steps/s at S=16):
  - conv models: `map_im2col` 2.46 vs `unroll` 0.25, lax-conv `map` 0.26 and `vmap` over an im2col
    model 0.92 (paper CNN, F=256); XLA:CPU runs a lax convolution inside a loop body ~10x slower
    than at top level, and vmap over conv kernels is a grouped convolution.
  - dense nets (Fig 20): seed-major `map` 692 vs `vmap` 587 (S=64: 708 vs 505): each seed's
    parameters stay in cache for a whole chunk of steps.
  - the paper CNN: `map_fused` (conv -> ReLU -> dense as one cache-blocked op, `rl_align.fused`)
    5.55 vs `map_im2col` 2.80 (S=1: 6.08 vs 2.50).
  So CPU runs every model seed-major with lax.map, conv models as conv-as-matmul (`map_fused`: the
  paper CNN's first block fused, every other conv model as in `map_im2col`).

  Measured on one H200 GPU (benchmarks/gpu_throughput.sh; model-steps/s at S=64):
  - paper CNN: `vmap_im2col` 1346 vs `vmap` over lax convs (cuDNN grouped convs) 536, `map` 841,
    vmap over the fused block 975, `map_fused` 436.
  - small CNN: `vmap_im2col` 2256 / `map` 2355 / `vmap` 1095 (S=16: 2558 / 2282 / 1005).
  - dense net: `vmap` 95773 vs `map` 12045.
  So accelerators run vmap, conv models as conv-as-matmul (`vmap_im2col`).  TPU is not measured
  and follows the GPU choice.
  """
  del seeds_per_device  # the CPU measurements favour the same layout at every S in {1, 8, 16, 64}
  if platform != "cpu":
    return "vmap_im2col" if hasattr(model, "conv_impl") else "vmap"
  return "map_fused" if hasattr(model, "conv_impl") else "map"


def choose_devices(available: int, n_seeds: int, requested: int = 0) -> int:
  """How many devices the seeds are sharded over: `num_devices` if > 0, else every device (never
  more than the seeds).  On 2 CPU cores the fused paper CNN ran at 4.93 / 5.55 / 5.62
  model-steps/s on one device and 3.71 / 5.69 / 5.31 on two in three runs: no reliable
  difference, so the default stays "every device" (benchmarks/README.md)."""
  n = requested if requested > 0 else available
  return max(1, min(n, available, n_seeds))


def choose_microbatch(platform: str, n_params: int, is_conv: bool, batch_size: int,
                      blocks_in_cache: bool = False) -> int:
  """Examples per gradient micro-batch for `grad_microbatch=0` (the full batch: no micro-batching).

  A step's gradient is the mean of its micro-batches' gradients (a `lax.scan`), the same value up
  to float32 summation order.  It pays where a conv net's activations dwarf its parameters: each
  micro-batch's patches and activations stay in cache, while every micro-batch adds one pass over
  the gradient accumulator.  Measured on the 2-core CPU (benchmarks/README.md), one seed's gradient
  on one core: small CNN (20 K params, batch 128) 300 ms full batch vs 120 / 121 / 128 / 135 / 172
  / 207 ms in micro-batches of 1 / 2 / 4 / 8 / 16 / 32; in the engine (S=16, both cores) 10.5
  model-steps/s full batch vs 18.4 in micro-batches of 2.  The paper CNN (14.7 M params) was
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
  return min(m for m in range(1, batch_size + 1)
             if batch_size % m == 0 and (n_params <= 2 ** 14 * m or m == batch_size))


def _per_seed(fn: Callable, layout: str) -> Callable:
  """Lifts fn(*per_seed_args) to stacked args (leading seed axis) with the given layout."""
  if layout in ("vmap", "vmap_im2col"):
    return jax.vmap(fn)
  if layout in ("map", "map_im2col", "map_fused"):
    return lambda *args: lax.map(lambda a: fn(*a), args)

  def unrolled(*args):
    s = jax.tree.leaves(args)[0].shape[0]
    outs = [fn(*jax.tree.map(lambda a, i=i: a[i], args)) for i in range(s)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  return unrolled


# ----------------------------------------------------------------------------------------------
# Members, state, results.


class TrainState(NamedTuple):
  """The engine's state; every leaf has a leading member axis (sharded over devices)."""
  params: Any
  opt_state: Any
  alive: Any       # [M] bool: False once the member's loss or gradient turned non-finite
  div_step: Any    # [M] int32: the step it diverged at, -1 if never


@dataclasses.dataclass(frozen=True)
class Members:
  """Who the engine trains: member m is seed `ids[m]` of root seed `roots[m]`, with its own
  hyper-parameters (`MEMBER_HPARAMS`).  A plain run has one member per seed of its config; a
  packed sweep concatenates the members of several points (`Members.concat`).

      m = train.Members.of(cfg)          # cfg.num_seeds members, cfg's root seed and values
      m.keys(train.DATA_STREAM)          # [M, 2] uint32 key data, member m's data-order key
  """
  roots: tuple[int, ...]
  ids: tuple[int, ...]
  learning_rate: tuple[float, ...]
  momentum: tuple[float, ...]
  weight_decay: tuple[float, ...]

  @classmethod
  def of(cls, cfg) -> "Members":
    s = int(cfg.num_seeds)
    return cls(roots=(int(cfg.seed),) * s, ids=tuple(seed_ids(cfg)),
               **{k: (float(cfg[k]),) * s for k in MEMBER_HPARAMS})

  @classmethod
  def concat(cls, parts: Sequence["Members"]) -> "Members":
    return cls(*(sum((getattr(p, f.name) for p in parts), ()) for f in dataclasses.fields(cls)))

  def __len__(self) -> int:
    return len(self.ids)

  def padded(self, m: int) -> "Members":
    """m >= len members: the padding members repeat the last one (their results are dropped)."""
    extra = m - len(self)
    return Members(*(v + v[-1:] * extra for v in dataclasses.astuple(self)))

  def keys(self, stream: int) -> np.ndarray:
    return np.stack([np.asarray(jax.random.key_data(seed_key(r, i, stream)))
                     for r, i in zip(self.roots, self.ids)])

  def hparams(self) -> dict[str, np.ndarray]:
    return {k: np.asarray(getattr(self, k), np.float32) for k in MEMBER_HPARAMS}


class EngineInputs(NamedTuple):
  """What a chunk reads besides the state: per-member keys, hyper-parameters and labels, and x."""
  data_keys: Any   # [M, 2] uint32
  hparams: Any     # {name: [M] float32}
  labels: Any      # [M, N] int32
  x: Any           # [N, ...] float32, replicated


@dataclasses.dataclass
class TrainResult:
  """What `train` returns; arrays are numpy with a leading seed axis of size num_seeds."""
  params: Any
  seed_ids: list[int]
  final_step: int
  steps_per_epoch: int
  diverged: np.ndarray            # [S] bool
  diverged_step: np.ndarray       # [S] int, -1 if never
  metrics: list[dict]
  snapshots: dict[int, dict[str, np.ndarray]]
  final_metrics: dict[str, np.ndarray]   # eval metrics at the final step, [S] each
  layout: str = ""


def first_layer_snapshot(params) -> dict[str, np.ndarray]:
  """Default snapshot: the first layer's kernel (first entry of the params dict)."""
  first = next(iter(params))
  return {"first_kernel": np.asarray(params[first]["kernel"])}


# ----------------------------------------------------------------------------------------------
# The engine.


def to_host(tree, m: int | None = None):
  """Device arrays -> numpy, first m members.  A global array that spans other processes is
  gathered with `multihost_utils.process_allgather` (every process must call this together)."""
  def one(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      a = multihost_utils.process_allgather(a, tiled=True)
    a = np.asarray(jax.device_get(a))
    return a if m is None else a[:m]
  return jax.tree.map(one, tree)


class Engine:
  """Compiled pieces for one (model, config, data shape, member count, device set).

  `train` drives it; benchmarks drive it directly::

      eng = train.Engine(model, cfg, n=len(x), x_shape=x.shape, n_members=8)
      members = train.Members.of(cfg).padded(eng.m_pad)
      state = eng.initial_state(members)                  # TrainState, sharded over the devices
      inputs = eng.put_inputs(members, x, labels)         # labels [M, N]
      state, loss, acc = eng.chunk(state, inputs, np.int32(t0), np.int32(t1))   # steps t0..t1
      params = train.to_host(state.params, 8)

  Members are sharded over the devices of every process (`jax.devices()`); inside a device they
  run in a layout (`choose_layout`).  Arrays enter through `jax.make_array_from_callback`, so the
  same host arrays on every process build one global array.
  """

  def __init__(self, model, cfg, n, x_shape, n_members, probe_fn=None, with_decay=None):
    self.cfg = cfg
    self.n = n
    self.steps_per_epoch = n // cfg.batch_size
    self.total = total_steps(cfg, n)
    self.devices = jax.devices()
    platform = self.devices[0].platform
    if jax.process_count() > 1:   # every process must own a shard of every array: use them all
      n_dev = len(self.devices)
    else:
      n_dev = choose_devices(len(self.devices), n_members, int(cfg.get("num_devices", 0)))
    self.m_pad = -(-n_members // n_dev) * n_dev
    self.s_pad = self.m_pad
    self.mesh = jax.make_mesh((n_dev,), (SEED_AXIS,), devices=self.devices[:n_dev])
    layout = cfg.seed_layout
    if layout == "auto":
      layout = choose_layout(model, platform, self.m_pad // n_dev)
    if layout in ("map_im2col", "map_fused", "vmap_im2col") and hasattr(model, "conv_impl"):
      model = model.clone(conv_impl=layout.split("_")[1])
    elif platform == "cpu" and getattr(model, "conv_impl", None) == "lax":
      logging.warning("seed_layout=%r runs lax convolutions inside a loop on XLA:CPU, measured ~10x "
                      "slower than seed_layout='map_fused' (the 'auto' choice on CPU).", layout)
    self.layout, self.model = layout, model
    self.microbatch = int(cfg.get("grad_microbatch", 0))
    if not self.microbatch:
      shapes = jax.eval_shape(model.init, jax.random.key(0),
                              jax.ShapeDtypeStruct((1,) + tuple(x_shape[1:]), jnp.float32))
      n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))
      self.microbatch = choose_microbatch(platform, n_params, hasattr(model, "conv_impl"),
                                          cfg.batch_size, getattr(model, "blocks_in_cache", False))
    self.with_decay = bool(cfg.weight_decay) if with_decay is None else bool(with_decay)
    self.tx = make_optimizer(cfg, self.total, with_decay=self.with_decay)
    self.seeded = NamedSharding(self.mesh, P(SEED_AXIS))
    self.replicated = NamedSharding(self.mesh, P())
    self._build(x_shape)
    self.probe = None
    if probe_fn is not None:
      self.probe = self._shard_map(_per_seed(lambda p: probe_fn(self.model, p), layout),
                                   (P(SEED_AXIS),), P(SEED_AXIS))

  def _shard_map(self, fn, in_specs, out_specs, donate_argnums=()):
    return jax.jit(jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs,
                                 check_vma=False), donate_argnums=donate_argnums)

  def _build(self, x_shape):
    model, cfg = self.model, self.cfg
    b, spe, total, with_decay = cfg.batch_size, self.steps_per_epoch, self.total, self.with_decay
    sd, rep = P(SEED_AXIS), P()

    def seed_init(key_data):
      key = jax.random.wrap_key_data(key_data)
      params = model.init(key, jnp.zeros((1,) + tuple(x_shape[1:]), jnp.float32))["params"]
      return params, self.tx.init(params)

    def loss_acc(params, xb, yb):
      logits = model.apply({"params": params}, xb)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
      return loss, (jnp.argmax(logits, -1) == yb).mean()

    grad_fn = jax.value_and_grad(loss_acc, has_aux=True)
    m = self.microbatch

    def batch_grads(params, xb, yb):
      """((loss, acc), grads) of the batch, as the mean over micro-batches of m examples."""
      if m >= b:
        return grad_fn(params, xb, yb)
      k = b // m
      def body(carry, mb):
        (loss, acc), grads = grad_fn(params, *mb)
        return jax.tree.map(jnp.add, carry, ((loss, acc), grads)), None
      zero = jnp.zeros((), jnp.float32)
      init = ((zero, zero), jax.tree.map(jnp.zeros_like, params))
      tot, _ = lax.scan(body, init, (xb.reshape((k, m) + xb.shape[1:]), yb.reshape(k, m)))
      return jax.tree.map(lambda t: t / k, tot)

    def seed_step(tx, params, opt_state, alive, xb, yb):
      (loss, acc), grads = batch_grads(params, xb, yb)
      updates, new_opt = tx.update(grads, opt_state, params)
      new_params = optax.apply_updates(params, updates)
      ok = alive & jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
      keep = lambda new, old: jnp.where(ok, new, old)
      return jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_opt, opt_state), ok, loss, acc

    perm_of = lambda k, e: jax.random.permutation(jax.random.fold_in(k, e), self.n)

    def seed_chunk(params, opt_state, alive, div_step, key_data, hparams, labels, x_all, t0, t1):
      """Steps t0..t1 of ONE member: (params, opt, alive, div_step), mean loss, mean accuracy."""
      data_key = jax.random.wrap_key_data(key_data)
      tx = make_optimizer(cfg, total, hparams, with_decay)   # the member's own hyper-parameters

      def body(t, carry):
        params, opt_state, alive, div_step, perm, lsum, asum = carry
        i, epoch = t % spe, t // spe
        perm = lax.cond(i == 0, lambda: perm_of(data_key, epoch), lambda: perm)
        idx = lax.dynamic_slice_in_dim(perm, i * b, b)
        params, opt_state, ok, loss, acc = seed_step(tx, params, opt_state, alive, x_all[idx],
                                                     labels[idx])
        div_step = jnp.where(alive & ~ok, t, div_step)
        lsum = lsum + jnp.where(ok, loss, jnp.nan)
        return params, opt_state, ok, div_step, perm, lsum, asum + acc

      zero = jnp.zeros((), jnp.float32)
      carry = (params, opt_state, alive, div_step, perm_of(data_key, t0 // spe), zero, zero)
      params, opt_state, alive, div_step, _, lsum, asum = lax.fori_loop(t0, t1, body, carry)
      steps = jnp.maximum(t1 - t0, 1).astype(jnp.float32)
      return TrainState(params, opt_state, alive, div_step), lsum / steps, asum / steps

    def chunk(state, inputs, t0, t1):
      # Members are independent, so the step loop sits inside the per-member function: map and
      # unroll run member-major (one member's parameters stay in cache for the whole chunk), vmap
      # batches it.
      one = lambda p, o, a, d, k, h, y: seed_chunk(p, o, a, d, k, h, y, inputs.x, t0, t1)
      return _per_seed(one, self.layout)(*state, inputs.data_keys, inputs.hparams, inputs.labels)

    def seed_chunk_fed(params, opt_state, alive, div_step, hparams, lsum, asum, xs, ys, tc, a, b):
      """Steps tc+a..tc+b-1 of ONE member from a host-fed buffer of steps tc.. (xs [T, B, ...],
      ys [T, B]): the same arithmetic as seed_chunk on the same batches.  The loss / accuracy
      sums carry over calls, so an interval that spans two buffers sums as one loop."""
      tx = make_optimizer(cfg, total, hparams, with_decay)

      def body(j, carry):
        params, opt_state, alive, div_step, lsum, asum = carry
        params, opt_state, ok, loss, acc = seed_step(tx, params, opt_state, alive, xs[j], ys[j])
        div_step = jnp.where(alive & ~ok, tc + j, div_step)
        lsum = lsum + jnp.where(ok, loss, jnp.nan)
        return params, opt_state, ok, div_step, lsum, asum + acc

      params, opt_state, alive, div_step, lsum, asum = lax.fori_loop(
          a, b, body, (params, opt_state, alive, div_step, lsum, asum))
      return TrainState(params, opt_state, alive, div_step), lsum, asum

    def chunk_fed(state, hparams, sums, xs, ys, tc, a, b):
      # Buffers have one fixed length, the bounds a, b are traced: one compiled program whatever
      # the intervals between logs / evals (a static length would compile once per length).
      one = lambda p, o, al, d, h, ls, acs, xb, yb: seed_chunk_fed(p, o, al, d, h, ls, acs, xb, yb,
                                                                   tc, a, b)
      return _per_seed(one, self.layout)(*state, hparams, *sums, xs, ys)

    self.init = self._shard_map(_per_seed(seed_init, self.layout), (sd,), (sd, sd))
    self.chunk_fed = self._shard_map(chunk_fed, (sd, sd, (sd, sd), sd, sd, rep, rep, rep),
                                     (sd, sd, sd), donate_argnums=(0,))
    # The state is donated: the step updates it in place (one copy of M x params in memory).
    self.chunk = self._shard_map(chunk, (sd, EngineInputs(sd, sd, sd, rep), rep, rep),
                                 (sd, sd, sd), donate_argnums=(0,))

    def seed_eval(params, xs, ys, mask):
      def body(tot, batch):
        xb, yb, mb = batch
        logits = model.apply({"params": params}, xb)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
        correct = (jnp.argmax(logits, -1) == yb)
        return tot + jnp.stack([(loss * mb).sum(), (correct * mb).sum()]), None
      tot, _ = lax.scan(body, jnp.zeros(2), (xs, ys, mask))
      return tot / mask.sum()

    def evaluate(params, xs, ys, mask):
      return _per_seed(lambda p, y: seed_eval(p, xs, y, mask), self.layout)(params, ys)

    self.evaluate = self._shard_map(evaluate, (sd, rep, sd, rep), sd)

  def _put(self, a, sharding):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

  def put_seeded(self, tree):
    """Host arrays with a leading member axis of size m_pad -> global arrays sharded over it."""
    return jax.tree.map(lambda a: self._put(a, self.seeded), tree)

  def put_replicated(self, a):
    return self._put(a, self.replicated)

  def init_params(self, members: Members):
    """(params, opt_state) of the model's own init, one per member (keys from INIT_STREAM)."""
    return self.init(self.put_seeded(members.keys(INIT_STREAM)))

  def initial_state(self, members: Members, params=None) -> TrainState:
    """The state at step 0: the model's init, or the given host params [m_pad, ...]."""
    if params is None:
      params, opt_state = self.init_params(members)
    else:
      params = self.put_seeded(params)
      opt_state = jax.jit(jax.vmap(self.tx.init), out_shardings=self.seeded)(params)
    return TrainState(params, opt_state, self.put_seeded(np.ones(self.m_pad, bool)),
                      self.put_seeded(np.full(self.m_pad, -1, np.int32)))

  def put_inputs(self, members: Members, x, labels) -> EngineInputs:
    return EngineInputs(self.put_seeded(members.keys(DATA_STREAM)),
                        self.put_seeded(members.hparams()),
                        self.put_seeded(pad_members(labels, self.m_pad)),
                        self.put_replicated(np.asarray(x, np.float32)))


_ENGINES: "collections.OrderedDict[tuple, Engine]" = collections.OrderedDict()
_ENGINES_LOCK = threading.Lock()
ENGINE_CACHE_SIZE = 4


def cached_engine(model, cfg, n, x_shape, n_members, probe_fn=None, with_decay=None) -> Engine:
  """`Engine(...)`, reused while the same (model, whole engine config, data shape, member count,
  probe, devices) comes again: e.g. the downstream arms of a transfer run share one compiled
  program instead of compiling it once per arm.  An Engine holds only compiled functions and
  constants, so sharing it changes no result.  The last ENGINE_CACHE_SIZE engines are kept."""
  try:
    key = (model, json.dumps(cfg.to_dict(), sort_keys=True, default=repr), int(n),
           tuple(int(d) for d in x_shape), int(n_members), probe_fn, with_decay,
           tuple((d.platform, d.id) for d in jax.devices()), jax.process_count())
    hash(key)
  except TypeError:   # an unhashable model or probe: no reuse
    return Engine(model, cfg, n, x_shape, n_members, probe_fn, with_decay)
  with _ENGINES_LOCK:
    eng = _ENGINES.get(key)
    if eng is not None:
      _ENGINES.move_to_end(key)
      return eng
  eng = Engine(model, cfg, n, x_shape, n_members, probe_fn, with_decay)
  with _ENGINES_LOCK:
    _ENGINES[key] = eng
    while len(_ENGINES) > ENGINE_CACHE_SIZE:
      _ENGINES.popitem(last=False)
  return eng


def pad_members(a, m_pad):
  """[M, ...] -> [m_pad, ...] by repeating the last row (padding members are dropped later)."""
  a = np.asarray(a)
  if a.shape[0] == m_pad:
    return a
  return np.concatenate([a, np.repeat(a[-1:], m_pad - a.shape[0], axis=0)], axis=0)


def _segments(eng: Engine, feed, members: Members, events: Sequence[int], step: int):
  """(t0, t1, buffer, ends) pieces the engine runs from `step` on.  Device-resident data: one piece
  per event interval (buffer None, ends True).  With a host feed: the pipeline's buffers, all of
  one length T (at most feed.chunk_bytes of inputs; prefetched on a grain thread and placed on the
  devices there), consecutive from `step`; an event interval is one piece or, where it crosses a
  buffer's end, several (ends marks its last).  The feed's position is a pure function of the
  step, so the checkpoint's step is all a resume needs."""
  events = [e for e in events if e > step]
  if feed is None:
    t = step
    for ev in events:
      yield t, ev, None, True
      t = ev
    return
  if not events:
    return
  from rl_align import pipeline  # pylint: disable=g-import-not-at-top  # pipeline imports train
  rows = pipeline.local_rows(eng.seeded, eng.m_pad)
  local = pipeline.HostFeed(feed.source, seed_ids=[members.ids[r] for r in rows],
                            data_seed=feed.data_seed, batch_size=feed.batch_size,
                            labels=feed.labels, mean=feed.mean, std=feed.std,
                            num_threads=feed.num_threads, prefetch=feed.prefetch,
                            chunk_bytes=feed.chunk_bytes)
  length = min(events[-1] - step, pipeline.max_chunk_steps(len(rows), feed.batch_size,
                                                            feed.example_shape, feed.chunk_bytes))
  bounds = [(t, t + length) for t in range(step, events[-1], length)]  # the last may run past
  buffers = local.chunks(bounds, pipeline.putter(eng.seeded))          # the end: never trained
  buf, t = next(buffers), step
  for ev in events:
    while t < ev:
      if t >= buf.t1:
        buf = next(buffers)
      end = min(ev, buf.t1)
      yield t, end, buf, end == ev
      t = end


@jax.jit
def _divide(sums, steps):
  """sums / steps with steps traced: a true division (XLA rewrites a division by a constant as a
  multiplication by its reciprocal, which can differ in the last bit)."""
  return jax.tree.map(lambda a: a / steps, sums)


def _mean_finite(v) -> float:
  """Mean over the members that have a finite value (NaN when none has: every one diverged)."""
  v = np.asarray(v, np.float64)
  ok = np.isfinite(v)
  return float(v[ok].mean()) if ok.any() else float("nan")


def _eval_batches(x, y, s, batch_size):
  """Pads an eval set to whole batches: xs [nb, B, ...], ys [S, nb, B], mask [nb, B]."""
  m = x.shape[0]
  bs = min(batch_size, m)
  nb = -(-m // bs)
  pad = nb * bs - m
  xs = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]).reshape((nb, bs) + x.shape[1:])
  y = np.broadcast_to(np.asarray(y), (s, m))
  ys = np.concatenate([y, np.zeros((s, pad), y.dtype)], axis=1).reshape(s, nb, bs)
  mask = np.concatenate([np.ones(m, np.float32), np.zeros(pad, np.float32)]).reshape(nb, bs)
  return xs.astype(np.float32), ys.astype(np.int32), mask


def _event_steps(cfg, total, spe, log_every, eval_every):
  snaps = {int(s) for s in cfg.snapshot_steps} | {int(e * spe) for e in cfg.snapshot_epochs}
  snaps = {s for s in snaps if 0 <= s <= total}
  logs = set(range(log_every, total + 1, log_every)) | {total}
  evals = set(range(eval_every, total + 1, eval_every)) | {total}
  return snaps, logs, evals


# ----------------------------------------------------------------------------------------------
# train(): one call, or several packed into one program.


@dataclasses.dataclass
class TrainCall:
  """The arguments of one `train` call (a sweep point's phase); `run_calls` packs several."""
  model: nn.Module
  cfg: Any
  x: np.ndarray
  labels: np.ndarray               # [S, N]
  members: Members
  workdir: str | None = None
  eval_sets: Mapping[str, tuple[Any, Any]] | None = None
  init_params: Any = None
  snapshot_fn: Callable[[Any], Mapping[str, np.ndarray]] = first_layer_snapshot
  probe_fn: Callable[[nn.Module, Any], Mapping[str, Any]] | None = None
  name: str = "train"


_packer = threading.local()


@contextlib.contextmanager
def submit_to(packer):
  """Inside this context, `train` in this thread hands its call to `packer.submit(call)` (which
  returns the call's TrainResult) instead of running it: `rl_align.packing` packs the calls of
  several sweep points into one engine program."""
  old = getattr(_packer, "current", None)
  _packer.current = packer
  try:
    yield
  finally:
    _packer.current = old


def train(model: nn.Module, cfg, x, labels, *, workdir: str | None = None,
          eval_sets: Mapping[str, tuple[Any, Any]] | None = None, init_params=None,
          snapshot_fn: Callable[[Any], Mapping[str, np.ndarray]] = first_layer_snapshot,
          probe_fn: Callable[[nn.Module, Any], Mapping[str, Any]] | None = None,
          name: str = "train") -> TrainResult:
  """Trains cfg.num_seeds seeds of `model` on (x, labels) with SGD-family optimizers.

  Args:
    model: a flax.linen Module mapping a batch of x to logits.
    cfg: `default_config()` (or an experiment config's engine part).
    x: [N, ...] float inputs, shared by all seeds.
    labels: [N] shared labels, or [S, N] per-seed labels (e.g. `random_labels`).
    workdir: if given, metrics/snapshots/checkpoints go there and a rerun resumes.
    eval_sets: name -> (x_eval, y_eval [M] or [S, M]); accuracy and loss logged as
      `<name>_accuracy`, `<name>_loss` at eval steps.  A "train" set (the first
      cfg.train_eval_examples examples with the seeds' labels) is added unless given.
    init_params: stacked params [S, ...] to start from instead of the model's init.
    snapshot_fn: stacked host params -> dict of arrays, stored at snapshot steps.
    probe_fn: (model, params of ONE seed) -> dict of scalars, jit-compatible; evaluated at eval
      steps and logged as `probe/<key>` (e.g. ReLU activity on a fixed probe batch, see
      rl_align.activity).  It receives the model the engine runs (possibly an im2col clone).
    name: the phase name (separates checkpoints and metrics of several phases in one workdir).
  """
  validate(cfg, model, x, labels)
  s = int(cfg.num_seeds)
  if is_feed(x):   # host-fed: batches stream from the pipeline, x never sits on the device
    labels = np.zeros((s, 0), np.int32)
  else:
    x = np.asarray(x, np.float32)
    labels = np.broadcast_to(np.asarray(labels, np.int32), (s, x.shape[0]))
  call = TrainCall(model=model, cfg=cfg, x=x, members=Members.of(cfg), labels=labels,
                   workdir=workdir, eval_sets=eval_sets, init_params=init_params,
                   snapshot_fn=snapshot_fn, probe_fn=probe_fn, name=name)
  packer = getattr(_packer, "current", None)
  if packer is not None:
    return packer.submit(call)
  return run_calls([call])[0]


class _CallView:
  """One call's share of a packed run: its member slice, its workdir's metrics and snapshots."""

  def __init__(self, call: TrainCall, start: int):
    self.call, self.sl = call, slice(start, start + len(call.members))
    self.ids = list(call.members.ids)
    self.snapshots: dict[int, dict[str, np.ndarray]] = {}
    self.metrics: list[dict] = []
    self.snap_dir = os.path.join(call.workdir, f"{call.name}_snapshots") if call.workdir else None

  def resume(self, step: int, is_main: bool) -> None:
    wd, name = self.call.workdir, self.call.name
    if wd is None:
      return
    if is_main:
      results_lib.truncate_jsonl(wd, "metrics.jsonl", step)
    self.metrics = [r for r in results_lib.read_jsonl(wd, "metrics.jsonl") if r.get("phase") == name]
    if self.snap_dir and os.path.isdir(self.snap_dir):
      for f in sorted(os.listdir(self.snap_dir)):
        if f.startswith("step_") and f.endswith(".npz") and int(f[5:-4]) <= step:
          self.snapshots[int(f[5:-4])] = results_lib.read_npz(self.snap_dir, f)

  def snapshot(self, step: int, host_params, is_main: bool) -> None:
    self.snapshots[step] = self.call.snapshot_fn(jax.tree.map(lambda a: a[self.sl], host_params))
    if self.snap_dir and is_main:
      results_lib.write_npz(self.snap_dir, f"step_{step:08d}.npz", self.snapshots[step])

  def log(self, step: int, spe: int, host: Mapping[str, np.ndarray], is_main: bool) -> None:
    rows = [{"phase": self.call.name, "step": step, "epoch": step / spe, "seed": sid,
             **{k: v[self.sl][i] for k, v in host.items()}} for i, sid in enumerate(self.ids)]
    self.metrics.extend(rows)
    if self.call.workdir and is_main:
      results_lib.append_jsonl(self.call.workdir, "metrics.jsonl", rows)


def _state_dir(calls: Sequence[TrainCall], packed_dir: str | None) -> str | None:
  """Where the orbax state lives: WORKDIR/<name>_state for a single call (as always), a folder
  of the packing's own directory named after the packed workdirs for several."""
  if len(calls) == 1 or packed_dir is None:
    wd = calls[0].workdir
    return os.path.abspath(os.path.join(wd, f"{calls[0].name}_state")) if wd else None
  tag = hashlib.sha1(json.dumps([c.workdir for c in calls]).encode()).hexdigest()[:12]
  return os.path.abspath(os.path.join(packed_dir, f"{calls[0].name}_{tag}"))


def _initial_state(eng: Engine, calls: Sequence[TrainCall], members: Members) -> TrainState:
  """Step-0 state of every member: given init params, or each call's model's own init (models
  of a pack may differ in init-only fields such as init scales)."""
  if all(c.init_params is not None for c in calls):
    params = jax.tree.map(lambda *a: np.concatenate(a), *[c.init_params for c in calls])
    return eng.initial_state(members, jax.tree.map(lambda a: pad_members(a, eng.m_pad), params))
  state = eng.initial_state(members)
  models_ = [c.model for c in calls]
  if all(mdl is models_[0] or mdl == models_[0] for mdl in models_):
    return state
  host = to_host(state.params)   # another init per distinct model, member m takes its call's
  start = 0
  for c in calls:
    if not c.model == models_[0]:
      other = Engine(c.model, c.cfg, eng.n, c.x.shape, eng.m_pad, with_decay=eng.with_decay)
      theirs = to_host(other.init_params(members)[0])
      sl = slice(start, start + len(c.members))
      host = jax.tree.map(lambda a, b: np.concatenate([a[:sl.start], b[sl], a[sl.stop:]]), host, theirs)
    start += len(c.members)
  return eng.initial_state(members, host)


def run_calls(calls: Sequence[TrainCall], packed_dir: str | None = None) -> list[TrainResult]:
  """Runs one engine program over the members of every call (they share the model's program,
  the engine config up to `MEMBER_HPARAMS` and the root seed, x and the eval inputs:
  `rl_align.packing.pack_key`).  Returns one TrainResult per call, each equal to the call run
  alone."""
  c0 = calls[0]
  cfg, x, name = c0.cfg, c0.x, c0.name
  feed = x if is_feed(x) else None
  members = Members.concat([c.members for c in calls])
  x_shape = (feed.n,) + tuple(feed.example_shape) if feed is not None else x.shape
  n, m = x_shape[0], len(members)
  views, start = [], 0
  for c in calls:
    views.append(_CallView(c, start))
    start += len(c.members)
  labels = np.concatenate([c.labels for c in calls])
  eng = cached_engine(c0.model, cfg, n, x_shape, m, c0.probe_fn,
                      with_decay=any(wd != 0 for wd in members.weight_decay))
  padded = members.padded(eng.m_pad)
  spe, total = eng.steps_per_epoch, eng.total
  log_every = cfg.log_every_steps or spe
  eval_every = cfg.eval_every_steps or log_every
  snap_steps, log_steps, eval_steps = _event_steps(cfg, total, spe, log_every, eval_every)
  events = sorted(snap_steps | log_steps | eval_steps)

  sets = dict(c0.eval_sets or {})
  k = min(n, cfg.train_eval_examples)
  head = feed.head(k) if feed is not None and "train" not in sets and k else None
  if "train" not in sets and k:
    sets["train"] = (head[0] if head is not None else x[:k], None)
  eval_data = {}
  for key, (xe, _) in sets.items():
    ys = []
    for c in calls:
      ye = (c.eval_sets or {}).get(key, (None, head[1] if head is not None else c.labels[:, :k]))[1]
      ys.append(np.broadcast_to(np.asarray(ye), (len(c.members), np.shape(xe)[0])))
    xs, ys, mask = _eval_batches(np.asarray(xe, np.float32), np.concatenate(ys), m,
                                 cfg.eval_batch_size)
    eval_data[key] = (eng.put_replicated(xs), eng.put_seeded(pad_members(ys, eng.m_pad)),
                      eng.put_replicated(mask))

  if feed is None:
    inputs = eng.put_inputs(padded, x, labels)
  else:
    hparams = eng.put_seeded(padded.hparams())
  state = _initial_state(eng, calls, padded)
  is_main = jax.process_index() == 0
  root = _state_dir(calls, packed_dir)
  ckpt = _Checkpointer(root) if root else None
  step = 0
  if ckpt is not None:
    restored = ckpt.restore(to_host(state))
    if restored is not None:
      step, host_state = restored
      state = TrainState(*eng.put_seeded(tuple(host_state)))
      for v in views:
        v.resume(step, is_main)
      logging.info("%s: resumed from step %d in %s", name, step, root)

  what = f"{m} members of {len(calls)} packed calls" if len(calls) > 1 else f"{m} seeds"
  logging.info("%s: %s x %d steps (%d/epoch) on %d %s device(s) in %d process(es), layout=%s, "
               "gradient micro-batch %d of %d", name, what, total, spe, eng.mesh.size,
               eng.devices[0].platform, jax.process_count(), eng.layout, eng.microbatch,
               cfg.batch_size)
  if 0 in snap_steps and any(0 not in v.snapshots for v in views):
    host_params = to_host(state.params, m)
    for v in views:
      v.snapshot(0, host_params, is_main)
  prog = progress_lib.Progress(total, step, name)
  last_ckpt = time.monotonic()
  final_metrics = {}
  precision = None if cfg.matmul_precision == "default" else cfg.matmul_precision

  def run_evals(params):
    out = {}
    for key, (xs, ys, mask) in eval_data.items():
      res = to_host(eng.evaluate(params, xs, ys, mask), m)
      out[f"{key}_loss"], out[f"{key}_accuracy"] = res[:, 0], res[:, 1]
    return out

  with jax.default_matmul_precision(precision):
    sums, start = None, step
    for t0, ev, fed, ends in _segments(eng, feed, padded, events, step):
      if fed is None:
        state, lmean, amean = eng.chunk(state, inputs, np.int32(t0), np.int32(ev))
      else:
        sums = sums or (eng.put_seeded(np.zeros(eng.m_pad, np.float32)),) * 2
        state, *sums = eng.chunk_fed(state, hparams, tuple(sums), fed.x, fed.y, np.int32(fed.t0),
                                     np.int32(t0 - fed.t0), np.int32(ev - fed.t0))
        if ends:   # the interval's means, divided as the device-resident chunk divides them
          lmean, amean = _divide(tuple(sums), np.float32(max(ev - start, 1)))
          sums, start = None, ev
      step = ev
      if not ends or ev not in events:
        continue
      if ev in log_steps or ev in eval_steps:
        host = {"loss": to_host(lmean, m), "batch_accuracy": to_host(amean, m),
                "alive": to_host(state.alive, m)}
        if ev in eval_steps:
          final_metrics = run_evals(state.params)
          host.update(final_metrics)
          if eng.probe is not None:
            for k, v in to_host(eng.probe(state.params), m).items():
              host[f"probe/{k}"] = v
        for v in views:
          v.log(ev, spe, host, is_main)
        prog.report(ev, {k: _mean_finite(v) for k, v in host.items() if k != "alive"})
      if ev in snap_steps:
        host_params = to_host(state.params, m)
        for v in views:
          v.snapshot(ev, host_params, is_main)
      if ckpt and (ev == total or time.monotonic() - last_ckpt > cfg.checkpoint_every_secs):
        ckpt.save(ev, to_host(state))
        last_ckpt = time.monotonic()

  if not final_metrics and ckpt is not None:  # finished run reloaded: recompute final eval
    final_metrics = run_evals(state.params)
  host_state = to_host(state, m)
  out = []
  for v in views:
    sl, ids = v.sl, v.ids
    diverged = ~host_state.alive[sl]
    if diverged.any():
      logging.warning("%s: seeds %s diverged (non-finite loss) and were frozen at steps %s.", name,
                      [ids[i] for i in np.flatnonzero(diverged)],
                      host_state.div_step[sl][diverged].tolist())
    out.append(TrainResult(
        params=jax.tree.map(lambda a: a[sl], host_state.params), seed_ids=ids, final_step=step,
        steps_per_epoch=spe, diverged=diverged, diverged_step=host_state.div_step[sl],
        metrics=v.metrics, snapshots=dict(sorted(v.snapshots.items())),
        final_metrics={k: a[sl] for k, a in final_metrics.items()}, layout=eng.layout))
  return out


def _quiet_orbax(record) -> bool:
  """absl-logger filter: orbax logs ~40 INFO lines per save; keep its warnings only."""
  return record.levelno >= 30 or "orbax" not in record.pathname


class _Checkpointer:
  """Orbax checkpoints of the stacked train state under `root`/checkpoints.

  Every process calls `save` and `restore` (orbax synchronizes them); the state is the host copy
  of the global arrays, identical on every process.
  """

  def __init__(self, root: str):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    absl_logger = logging.get_absl_logger()
    if _quiet_orbax not in absl_logger.filters:
      absl_logger.addFilter(_quiet_orbax)
    self._ocp = ocp
    self.root = root
    opts = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    self.mngr = ocp.CheckpointManager(os.path.join(self.root, "checkpoints"), options=opts)

  def save(self, step: int, host_state) -> None:
    self.mngr.save(step, args=self._ocp.args.StandardSave(tuple(host_state)), force=True)
    self.mngr.wait_until_finished()

  def restore(self, template):
    step = self.mngr.latest_step()
    if step is None:
      return None
    try:
      restored = self.mngr.restore(step, args=self._ocp.args.StandardRestore(tuple(template)))
    except Exception as e:  # a checkpoint of another model / config
      raise errors.ConfigError(
          f"the checkpoint at step {step} in {self.root} does not match this run's model or "
          f"config ({type(e).__name__}: {str(e)[:200]}). Fix: use a fresh --workdir, or rerun "
          "with the config that wrote it.") from None
    return step, TrainState(*jax.tree.map(np.asarray, restored))


def init_distributed() -> None:
  """Multi-host from the environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
  JAX_PROCESS_ID, or a SLURM / Open MPI job): see `rl_align.distributed.initialize`."""
  from rl_align import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize()
