"""The compiled engine: one member's program (init, step loop, eval), lifted over the members of
a device and sharded over the devices.

`Member` holds the per-member functions: the gradient (in micro-batches), the step, and ONE step
loop that serves both device-resident data (batches gathered from x by the member's epoch
permutation) and host-fed buffers.  `Engine` lifts them over the members with the layout's lift
(`layout.lift_members`), shards them over a mesh with one member axis and compiles them.
"""

import collections
import functools
import json
from typing import Any, NamedTuple

import jax
from jax import lax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import optax

from rl_align import flops as flops_lib
from rl_align import models
from rl_align import seeds
from rl_align.engine import config as config_lib
from rl_align.engine import layout as layout_lib
from rl_align.engine import optimizer as optimizer_lib

MEMBER_AXIS = "member"


class TrainState(NamedTuple):
  """The engine's state; every leaf has a leading member axis (sharded over devices)."""

  params: Any
  opt_state: Any
  alive: Any  # [M] bool: False once the member's loss or gradient turned non-finite
  div_step: Any  # [M] int32: the step it diverged at, -1 if never


class EngineInputs(NamedTuple):
  """What a chunk reads besides the state: per-member keys, hyper-parameters and labels, and x."""

  data_keys: Any  # [M, 2] uint32
  hparams: Any  # {name: [M] float32}
  labels: Any  # [M, N] int32
  x: Any  # [N, ...] float32, replicated


def to_host(tree, m: int | None = None):
  """Device arrays -> numpy, first m members.  A global array that spans other processes is
  gathered with `multihost_utils.process_allgather` (every process must call this together)."""

  def one(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      a = multihost_utils.process_allgather(a, tiled=True)
    a = np.asarray(jax.device_get(a))
    return a if m is None else a[:m]

  return jax.tree.map(one, tree)


def pad_members(a, m_pad):
  """[M, ...] -> [m_pad, ...] by repeating the last row (padding members are dropped later)."""
  a = np.asarray(a)
  if a.shape[0] == m_pad:
    return a
  return np.concatenate([a, np.repeat(a[-1:], m_pad - a.shape[0], axis=0)], axis=0)


@jax.jit
def divide(sums, steps):
  """sums / steps with steps traced: a true division (XLA rewrites a division by a constant as a
  multiplication by its reciprocal, which can differ in the last bit)."""
  return jax.tree.map(lambda a: a / steps, sums)


class Member:
  """The program of ONE member (no member axis): `Engine` lifts these over the members."""

  def __init__(self, model, cfg, x_shape, microbatch: int, with_decay: bool):
    self.model, self.cfg, self.with_decay = model, cfg, with_decay
    self.n, self.example_shape = x_shape[0], tuple(x_shape[1:])
    self.batch, self.microbatch = cfg.batch_size, microbatch
    self.spe, self.total = self.n // cfg.batch_size, config_lib.total_steps(cfg, self.n)
    self.tx = optimizer_lib.make_optimizer(cfg, self.total, with_decay=with_decay)
    self.grad_fn = jax.value_and_grad(self.loss_acc, has_aux=True)

  def init(self, key_data):
    key = jax.random.wrap_key_data(key_data)
    params = self.model.init(key, jnp.zeros((1,) + self.example_shape, jnp.float32))["params"]
    return params, self.tx.init(params)

  def loss_acc(self, params, xb, yb):
    logits = self.model.apply({"params": params}, xb)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
    return loss, (jnp.argmax(logits, -1) == yb).mean()

  def batch_grads(self, params, xb, yb):
    """((loss, acc), grads) of the batch, as the mean over micro-batches of m examples."""
    b, m = self.batch, self.microbatch
    if m >= b:
      return self.grad_fn(params, xb, yb)
    k = b // m

    def body(carry, mb):
      (loss, acc), grads = self.grad_fn(params, *mb)
      return jax.tree.map(jnp.add, carry, ((loss, acc), grads)), None

    zero = jnp.zeros((), jnp.float32)
    init = ((zero, zero), jax.tree.map(jnp.zeros_like, params))
    tot, _ = lax.scan(body, init, (xb.reshape((k, m) + xb.shape[1:]), yb.reshape(k, m)))
    return jax.tree.map(lambda t: t / k, tot)

  def step(self, tx, params, opt_state, alive, xb, yb):
    """One SGD-family step; a non-finite loss or gradient keeps the old values and kills it.

    The update runs under `lax.cond`: a select of new and old values (`jnp.where`) made XLA
    keep the old optimizer state in a copy and read it twice, about 10% of a Fig 20 step on CPU
    (`benchmarks/main_job.py`, section 2).  The results are bitwise the same.  Under `vmap`
    the cond becomes that select again."""
    (loss, acc), grads = self.batch_grads(params, xb, yb)
    ok = alive & jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
    params, opt_state = lax.cond(
      ok, functools.partial(self.update, tx), lambda p, o, g: (p, o), params, opt_state, grads
    )
    return params, opt_state, ok, loss, acc

  @staticmethod
  def update(tx, params, opt_state, grads):
    """(new params, new optimizer state) of one optimizer update, unguarded."""
    updates, new_opt = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_opt

  def loop(self, hparams, state: TrainState, aux, sums, lo, hi, batch_at, step_at):
    """THE step loop: iterations lo..hi-1; batch_at(j, aux) -> (xb, yb, aux) is iteration j's
    batch, step_at(j) its global step.  Returns (state, aux, (loss sum, accuracy sum)); a
    diverged member's steps add NaN to the loss sum."""
    tx = optimizer_lib.make_optimizer(self.cfg, self.total, hparams, self.with_decay)

    def body(j, carry):
      params, opt_state, alive, div_step, aux, lsum, asum = carry
      xb, yb, aux = batch_at(j, aux)
      params, opt_state, ok, loss, acc = self.step(tx, params, opt_state, alive, xb, yb)
      div_step = jnp.where(alive & ~ok, step_at(j), div_step)
      lsum = lsum + jnp.where(ok, loss, jnp.nan)
      return params, opt_state, ok, div_step, aux, lsum, asum + acc

    params, opt_state, alive, div_step, aux, lsum, asum = lax.fori_loop(
      lo, hi, body, (*state, aux, *sums)
    )
    return TrainState(params, opt_state, alive, div_step), aux, (lsum, asum)

  def chunk(self, state, key_data, hparams, labels, x_all, t0, t1):
    """Steps t0..t1 on device-resident data: (state, mean loss, mean accuracy)."""
    data_key = jax.random.wrap_key_data(key_data)
    b, spe = self.batch, self.spe
    perm_of = lambda e: jax.random.permutation(jax.random.fold_in(data_key, e), self.n)

    def batch_at(t, perm):
      i = t % spe
      perm = lax.cond(i == 0, lambda: perm_of(t // spe), lambda: perm)
      idx = lax.dynamic_slice_in_dim(perm, i * b, b)
      return x_all[idx], labels[idx], perm

    zero = jnp.zeros((), jnp.float32)
    state, _, (lsum, asum) = self.loop(
      hparams, state, perm_of(t0 // spe), (zero, zero), t0, t1, batch_at, lambda t: t
    )
    steps = jnp.maximum(t1 - t0, 1).astype(jnp.float32)
    return state, lsum / steps, asum / steps

  def chunk_fed(self, state, hparams, sums, xs, ys, tc, a, b):
    """Steps tc+a..tc+b-1 from a host-fed buffer of steps tc.. (xs [T, B, ...], ys [T, B]): the
    same arithmetic as `chunk` on the same batches.  The loss / accuracy sums carry over calls,
    so an interval that spans two buffers sums as one loop."""
    state, _, sums = self.loop(
      hparams, state, (), sums, a, b, lambda j, aux: (xs[j], ys[j], aux), lambda j: tc + j
    )
    return state, *sums

  def evaluate(self, params, ys, xs, mask):
    """[mean loss, accuracy] over the unmasked examples of batches xs [nb, B, ...], ys [nb, B]."""

    def body(tot, batch):
      xb, yb, mb = batch
      logits = self.model.apply({"params": params}, xb)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
      correct = jnp.argmax(logits, -1) == yb
      return tot + jnp.stack([(loss * mb).sum(), (correct * mb).sum()]), None

    tot, _ = lax.scan(body, jnp.zeros(2), (xs, ys, mask))
    return tot / mask.sum()


class Engine:
  """Compiled pieces for one (model, config, data shape, member count, device set).

  `train` drives it; benchmarks drive it directly::

      eng = core.Engine(model, cfg, x_shape=x.shape, n_members=8)
      members = seeds.Members.of(cfg).padded(eng.m_pad)
      state = eng.initial_state(members)                  # TrainState, sharded over the devices
      inputs = eng.put_inputs(members, x, labels)         # labels [M, N]
      state, loss, acc = eng.chunk(state, inputs, np.int32(t0), np.int32(t1))   # steps t0..t1
      params = core.to_host(state.params, 8)

  Members are sharded over the devices of every process (`jax.devices()`); inside a device they
  run in a layout (`layout.resolve`).  Arrays enter through `jax.make_array_from_callback`, so the
  same host arrays on every process build one global array.
  """

  def __init__(self, model, cfg, x_shape, n_members, probe_fn=None, with_decay=None):
    self.cfg, self.x_shape, self.n = cfg, tuple(x_shape), x_shape[0]
    self.devices = jax.devices()
    self.given_model = model
    platform = self.devices[0].platform
    if jax.process_count() > 1:  # every process must own a shard of every array: use them all
      n_dev = len(self.devices)
    else:
      n_dev = layout_lib.choose_devices(
        len(self.devices), n_members, int(cfg.get("num_devices", 0))
      )
    self.m_pad = -(-n_members // n_dev) * n_dev
    self.mesh = jax.make_mesh((n_dev,), (MEMBER_AXIS,), devices=self.devices[:n_dev])
    self.model, self.layout = layout_lib.resolve(model, cfg, platform)
    self.microbatch = int(cfg.get("grad_microbatch", 0)) or self._auto_microbatch(platform, x_shape)
    self.with_decay = bool(cfg.weight_decay) if with_decay is None else bool(with_decay)
    self.member = Member(self.model, cfg, x_shape, self.microbatch, self.with_decay)
    self.steps_per_epoch, self.total, self.tx = self.member.spe, self.member.total, self.member.tx
    self.member_sharding = NamedSharding(self.mesh, P(MEMBER_AXIS))
    self.replicated = NamedSharding(self.mesh, P())
    self._compile(probe_fn)

  def _auto_microbatch(self, platform, x_shape) -> int:
    model = self.model
    shapes = jax.eval_shape(
      model.init, jax.random.key(0), jax.ShapeDtypeStruct((1,) + tuple(x_shape[1:]), jnp.float32)
    )
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))
    return layout_lib.choose_microbatch(
      platform,
      n_params,
      models.is_conv_model(model),
      self.cfg.batch_size,
      getattr(model, "blocks_in_cache", False),
    )

  def _program(self, fn, n_lifted, in_specs, out_specs, donate_argnums=()):
    """jit(shard_map(...)) of fn lifted over the member axis of its first `n_lifted` arguments;
    the other arguments are shared by every member (passed to each as they are)."""
    lift = self.layout.lift

    def lifted(*args):
      shared = args[n_lifted:]
      return layout_lib.lift_members(lambda *a: fn(*a, *shared), lift)(*args[:n_lifted])

    return jax.jit(
      jax.shard_map(
        lifted, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
      ),
      donate_argnums=donate_argnums,
    )

  def _compile(self, probe_fn) -> None:
    """The member functions lifted over the members and sharded: arguments with spec `mem` have a
    member axis, `rep` ones are shared.  The state is donated: the step updates it in place (one
    copy of M x params in memory)."""
    mem, rep, mb = P(MEMBER_AXIS), P(), self.member
    self.init = self._program(mb.init, 1, (mem,), (mem, mem))
    self._chunk = self._program(
      mb.chunk, 4, (mem, mem, mem, mem, rep, rep, rep), (mem, mem, mem), donate_argnums=(0,)
    )
    # Buffers have one fixed length, the bounds a, b are traced: one compiled program whatever
    # the intervals between logs / evals (a static length would compile once per length).
    self.chunk_fed = self._program(
      mb.chunk_fed,
      5,
      (mem, mem, (mem, mem), mem, mem, rep, rep, rep),
      (mem, mem, mem),
      donate_argnums=(0,),
    )
    self._evaluate = self._program(mb.evaluate, 2, (mem, mem, rep, rep), mem)
    self.probe = None
    if probe_fn is not None:
      self.probe = self._program(lambda p: probe_fn(self.model, p), 1, (mem,), mem)

  @functools.cached_property
  def step_flops(self) -> float:
    """Nominal matmul/conv FLOPs of ONE member's ONE training step (`rl_align.flops`): the jaxpr
    of `Member.step` on abstract shapes (traced, never run; once per engine), for the given model
    with lax convolutions and the whole batch in one gradient, so a layout's im2col, fused kernels
    or micro-batching change how the work is done, not the count."""
    model = self.given_model
    if models.is_conv_model(model) and model.conv_impl != "lax":
      model = model.clone(conv_impl="lax")
    mb = Member(model, self.cfg, self.x_shape, self.cfg.batch_size, self.with_decay)
    params, opt_state = jax.eval_shape(lambda: mb.init(jax.random.key_data(jax.random.key(0))))
    xb = jax.ShapeDtypeStruct((mb.batch,) + mb.example_shape, jnp.float32)
    yb = jax.ShapeDtypeStruct((mb.batch,), jnp.int32)
    step = lambda p, o, x, y: mb.step(mb.tx, p, o, jnp.bool_(True), x, y)
    return flops_lib.dot_conv_flops(jax.make_jaxpr(step)(params, opt_state, xb, yb))

  def chunk(self, state: TrainState, inputs: EngineInputs, t0, t1):
    """Steps t0..t1 of every member on device-resident data: (state, mean loss [M], accuracy [M])."""
    return self._chunk(state, inputs.data_keys, inputs.hparams, inputs.labels, inputs.x, t0, t1)

  def evaluate(self, params, ys, xs, mask):
    """[M, 2] (loss, accuracy) of every member on eval batches: ys [M, nb, B] (the members'),
    xs and mask (shared).  As every engine program, and `Member.evaluate`: the members' arrays
    first, then the shared ones."""
    return self._evaluate(params, ys, xs, mask)

  def _put(self, a, sharding):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

  def put_members(self, tree):
    """Host arrays with a leading member axis of size m_pad -> global arrays sharded over it."""
    return jax.tree.map(lambda a: self._put(a, self.member_sharding), tree)

  def put_replicated(self, a):
    return self._put(a, self.replicated)

  def init_params(self, members: seeds.Members):
    """(params, opt_state) of the model's own init, one per member (keys from INIT_STREAM)."""
    return self.init(self.put_members(members.keys(seeds.INIT_STREAM)))

  def initial_state(self, members: seeds.Members, params=None) -> TrainState:
    """The state at step 0: the model's init, or the given host params [m_pad, ...]."""
    if params is None:
      params, opt_state = self.init_params(members)
    else:
      params = self.put_members(params)
      opt_state = jax.jit(jax.vmap(self.tx.init), out_shardings=self.member_sharding)(params)
    return TrainState(
      params,
      opt_state,
      self.put_members(np.ones(self.m_pad, bool)),
      self.put_members(np.full(self.m_pad, -1, np.int32)),
    )

  def put_inputs(self, members: seeds.Members, x, labels) -> EngineInputs:
    return EngineInputs(
      self.put_members(members.keys(seeds.DATA_STREAM)),
      self.put_members(members.hparams()),
      self.put_members(pad_members(labels, self.m_pad)),
      self.put_replicated(np.asarray(x, np.float32)),
    )


def abstract_programs(eng: Engine, fed_steps: int = 2, eval_batches: int = 1) -> dict:
  """{name: (jitted program, abstract arguments)} of the engine's programs "init", "chunk",
  "chunk_fed" and "evaluate", the arguments as `jax.ShapeDtypeStruct`s with the engine's
  shardings (the state's from `jax.eval_shape` of its init): nothing is allocated or compiled.
  For lowering a program for a platform this host does not have (tests/test_lowering.py)::

      fn, args = core.abstract_programs(eng)["chunk"]
      exported = jax.export.export(fn, platforms=["tpu"])(*args)

  "chunk_fed" reads host-fed buffers of `fed_steps` steps, "evaluate" `eval_batches` batches of
  cfg.eval_batch_size examples."""
  mem, rep, m = eng.member_sharding, eng.replicated, eng.m_pad
  f32, i32 = jnp.float32, jnp.int32
  sds = lambda shape, dtype, sharding=mem: jax.ShapeDtypeStruct(
    tuple(shape), dtype, sharding=sharding
  )
  example, batch, eb = eng.x_shape[1:], eng.cfg.batch_size, eng.cfg.eval_batch_size
  keys, step = sds((m, 2), jnp.uint32), sds((), i32, rep)
  params, opt_state = jax.eval_shape(eng.init, keys)
  state = TrainState(params, opt_state, sds((m,), jnp.bool_), sds((m,), i32))
  hparams = {k: sds((m,), f32) for k in seeds.MEMBER_HPARAMS}
  return {
    "init": (eng.init, (keys,)),
    "chunk": (
      eng._chunk,
      (state, keys, hparams, sds((m, eng.n), i32), sds(eng.x_shape, f32, rep), step, step),
    ),
    "chunk_fed": (
      eng.chunk_fed,
      (
        state,
        hparams,
        (sds((m,), f32),) * 2,
        sds((m, fed_steps, batch) + example, f32),
        sds((m, fed_steps, batch), i32),
        step,
        step,
        step,
      ),
    ),
    "evaluate": (
      eng._evaluate,
      (
        params,
        sds((m, eval_batches, eb), i32),
        sds((eval_batches, eb) + example, f32, rep),
        sds((eval_batches, eb), f32, rep),
      ),
    ),
  }


_ENGINES: "collections.OrderedDict[tuple, Engine]" = collections.OrderedDict()
ENGINE_CACHE_SIZE = 4


def cached_engine(model, cfg, x_shape, n_members, probe_fn=None, with_decay=None) -> Engine:
  """`Engine(...)`, reused while the same (model, whole engine config, data shape, member count,
  probe, devices) comes again: e.g. the downstream arms of a transfer run share one compiled
  program instead of compiling it once per arm.  An Engine holds only compiled functions and
  constants, so sharing it changes no result.  The last ENGINE_CACHE_SIZE engines are kept."""
  try:
    key = (
      model,
      json.dumps(cfg.to_dict(), sort_keys=True, default=repr),
      tuple(int(d) for d in x_shape),
      int(n_members),
      probe_fn,
      with_decay,
      tuple((d.platform, d.id) for d in jax.devices()),
      jax.process_count(),
    )
    hash(key)
  except TypeError:  # an unhashable model or probe: no reuse
    return Engine(model, cfg, x_shape, n_members, probe_fn, with_decay)
  eng = _ENGINES.get(key)
  if eng is not None:
    _ENGINES.move_to_end(key)
    return eng
  eng = _ENGINES[key] = Engine(model, cfg, x_shape, n_members, probe_fn, with_decay)
  while len(_ENGINES) > ENGINE_CACHE_SIZE:
    _ENGINES.popitem(last=False)
  return eng
