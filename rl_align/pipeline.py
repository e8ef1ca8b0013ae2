"""Host input pipeline: the engine's batches computed on the host and streamed with grain.

The multi-member engine (`rl_align.engine.programs`) draws member s's batch at step t on the device:
epoch e = t // spe, i = t % spe (spe = N // B steps per epoch),
perm = jax.random.permutation(fold_in(data_key_s, e), N), idx = perm[i*B:(i+1)*B], and takes
x[idx] with labels[s, idx].  This module computes the same indices, and the same random labels
one example at a time (no [S, N] table), from pure functions of (root seed, seed id, step), so a
host-fed run can see exactly the batches of a device-resident one::

    from rl_align import data, pipeline
    src = data.source("photos", n=5000, size=16, short_side=128, cell=24)   # nothing rendered yet
    mean, std = data.channel_stats(src)                                      # streamed
    feed = pipeline.HostFeed(src, seed_ids=range(8), data_seed=0, batch_size=128,
                             labels=pipeline.RandomLabels(root_seed=1, num_classes=10),
                             mean=mean, std=std)
    bounds = pipeline.chunk_bounds([39, 78], start=0, max_steps=20)  # [(0, 20), (20, 39), ...]
    for c in feed.chunks(bounds):        # the next chunk is prepared on a grain thread
      c.t0, c.t1, c.x, c.y               # x [S, T, B, 16, 16, 3] float32, y [S, T, B] int32

    pipeline.batch_indices(0, 3, n=5000, batch_size=128, t0=0, t1=39)     # [T, B], seed id 3
    seeds.random_labels(1, [3], None, 10, idx=idx[None])[0]   # == the engine's draw at idx

Decoding and resizing happen in the source's `take` (`rl_align.data.Source`), the uint8 -> [0, 1]
conversion and the per-channel standardization (given statistics; for uint8 sources a [256, C]
table of `data.standardize`'s own values, so the very same floats) here, all on grain's worker
threads.  Memory: one chunk per prefetch slot, never the dataset as float32.

Position: a chunk is a pure function of (t0, t1) and the feed's arguments, so there is no
iterator state to save: the engine's step is the position.  Resuming at step t is
`feed.chunks(bounds that start at t)`; the checkpoint needs nothing beyond the step it already has.

Several processes: each process builds the feed for the members of its addressable devices only
(`local_rows(sharding, n_members)` -> the rows, then their seed ids), and puts each chunk with
`jax.make_array_from_process_local_data` (`putter(sharding)`).

Random labels: `seeds.random_labels(..., idx=...)` evaluates the engine's draw at the indices of a
batch only (see `rl_align.seeds`), so a random-label feed holds no [S, N] table.
"""

import collections
import dataclasses
import functools
import threading
from typing import Any, Callable, Optional, Sequence

import grain
import jax
import jax.numpy as jnp
import numpy as np

from rl_align import data as data_lib
from rl_align import errors
from rl_align import seeds
from rl_align.engine import feed as feed_lib


# ----------------------------------------------------------------------------------------------
# The engine's draws, on the host.


def _cpu():
  return jax.local_devices(backend="cpu")[0]


@functools.partial(jax.jit, static_argnums=(2,))
def _permutation_jit(key, epoch, n):
  return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def epoch_permutation(data_seed: int, seed_id: int, epoch: int, n: int) -> np.ndarray:
  """int32 [n]: the engine's example order in `epoch` for one seed id (its data stream)."""
  with jax.default_device(_cpu()):
    key = seeds.seed_key(int(data_seed), int(seed_id), seeds.DATA_STREAM)
    out = _permutation_jit(key, jnp.int32(epoch), int(n))
  return np.asarray(out)


def _check_steps(n: int, batch_size: int, t0: int, t1: int) -> int:
  if not 1 <= batch_size <= n:
    raise errors.ConfigError(
      f"batch_size must be in [1, N={n}], got {batch_size}. "
      f"Fix: --config.batch_size={min(n, 128) if n else 1}."
    )
  if not 0 <= t0 <= t1:
    raise errors.ConfigError(f"steps must satisfy 0 <= t0 <= t1, got t0={t0}, t1={t1}.")
  return n // batch_size


def batch_indices(
  data_seed: int, seed_id: int, n: int, batch_size: int, t0: int, t1: int
) -> np.ndarray:
  """int32 [t1 - t0, batch_size]: the example indices the engine trains seed id `seed_id` on at
  steps t0..t1-1 (root seed `data_seed`, i.e. the engine config's `seed`)."""
  spe = _check_steps(n, batch_size, t0, t1)
  out = np.empty((t1 - t0, batch_size), np.int32)
  for e in range(t0 // spe, -(-t1 // spe)):
    perm = epoch_permutation(data_seed, seed_id, e, n)
    a, b = max(t0, e * spe), min(t1, (e + 1) * spe)
    i0 = a - e * spe
    out[a - t0 : b - t0] = perm[i0 * batch_size : (i0 + b - a) * batch_size].reshape(
      b - a, batch_size
    )
  return out


# ----------------------------------------------------------------------------------------------
# Chunks of steps.


def chunk_bounds(events: Sequence[int], start: int, max_steps: int) -> list:
  """[(t0, t1), ...] covering start..max(events): every interval between consecutive events
  (steps where the engine stops: logs, evals, snapshots, the end) cut into pieces of at most
  max_steps steps."""
  if max_steps < 1:
    raise errors.ConfigError(f"max_steps must be >= 1, got {max_steps}.")
  out, t = [], int(start)
  for ev in sorted(int(e) for e in events):
    while t < ev:
      out.append((t, min(ev, t + max_steps)))
      t = out[-1][1]
  return out


DEFAULT_CHUNK_BYTES = 256 << 20


def max_chunk_steps(
  n_members: int, batch_size: int, example_shape, budget_bytes: int = DEFAULT_CHUNK_BYTES
) -> int:
  """Steps per chunk so that one chunk's x (float32 [S, T, B, ...]) stays under budget_bytes."""
  per_step = 4 * n_members * batch_size * int(np.prod(example_shape, dtype=np.int64))
  return max(1, int(budget_bytes // max(1, per_step)))


def local_rows(sharding, num_rows: int) -> list:
  """Rows of an array [num_rows, ...] placed with `sharding` that this process's devices hold,
  ascending: the members whose batches this process's feed must produce."""
  rows = set()
  for index in sharding.addressable_devices_indices_map((num_rows,)).values():
    rows.update(range(*index[0].indices(num_rows)))
  return sorted(rows)


@dataclasses.dataclass
class Chunk:
  """Steps t0..t1-1 of every member: x [S, T, B, ...] float32, y [S, T, B] int32."""

  t0: int
  t1: int
  x: Any
  y: Any


def putter(sharding) -> Callable[[Chunk], Chunk]:
  """Chunk -> Chunk with x, y placed as global arrays sharded over members (leading axis) with
  `sharding`, from this process's rows only (`jax.make_array_from_process_local_data`)."""

  def put(c: Chunk) -> Chunk:
    return Chunk(
      c.t0,
      c.t1,
      jax.make_array_from_process_local_data(sharding, c.x),
      jax.make_array_from_process_local_data(sharding, c.y),
    )

  return put


class Reader:
  """Examples of a source by index, as the engine trains on them: (x float32 [k, ...], y [k]).

      read = pipeline.Reader(src, mean, std)     # mean, std: data.channel_stats(...); or None
      x, y = read(np.arange(100))                # decoded, in [0, 1], standardized per channel

  uint8 sources are standardized by a [256, C] table of `data.standardize`'s own values (the very
  floats the elementwise ops give, ~10x faster); a source that `decodes` reads repeated indices once.
  """

  def __init__(self, source: data_lib.Source, mean=None, std=None):
    if (mean is None) != (std is None):
      raise errors.ConfigError("pipeline: pass both mean and std, or neither.")
    self.source, self.mean, self.std, self._lut = source, mean, std, None
    shape = tuple(source.example_shape)
    if mean is not None:  # validates the shapes and a constant channel once, up front
      data_lib.standardize(np.zeros((1,) + shape, np.float32), mean, std)
      if source.dtype == np.uint8:  # every uint8 value of every channel, standardized: [256, C]
        levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], shape[-1], 1)
        self._lut = np.ascontiguousarray(
          data_lib.standardize(data_lib.to_unit_float(levels), mean, std).T
        )

  def __len__(self) -> int:
    return len(self.source)

  def __call__(self, idx) -> tuple:
    flat = np.asarray(idx).reshape(-1)
    if self.source.decodes:  # members share examples: read each once
      uniq, inv = np.unique(flat, return_inverse=True)
      x, y = self.source.take(uniq)
      x, y = x[inv], y[inv]
    else:
      x, y = self.source.take(flat)
    if self._lut is not None and x.dtype == np.uint8:
      out = np.empty(x.shape, np.float32)
      for c in range(x.shape[-1]):
        out[..., c] = self._lut[c][x[..., c]]
      return out, y
    x = data_lib.to_unit_float(x)
    if self.mean is not None:
      x = data_lib.standardize(x, self.mean, self.std)
    return x, y


@dataclasses.dataclass(frozen=True)
class RandomLabels:
  """Per-member random labels: member s gets seeds.random_labels(root_seed, [s], N, K), K the
  member's entry of classes_by_seed ((seed id, K) pairs) or else num_classes: members that draw
  from different K share one feed (the specialization sweep's K groups)."""

  root_seed: int
  num_classes: int
  classes_by_seed: tuple = ()

  def check(self) -> None:
    """Raises ConfigError unless every K is an integer >= 1 (and the PRNG draws at indices)."""
    for k in [self.num_classes] + [k for _, k in self.classes_by_seed]:
      seeds.check_num_classes(k)
    seeds.check_prng()

  def at(self, seed_ids: Sequence[int], idx: np.ndarray) -> np.ndarray:
    """int32 [S, ...]: the labels of seed_ids[s] at the indices idx[s], one draw per K."""
    ks = dict(self.classes_by_seed)
    per_row = [ks.get(s, self.num_classes) for s in seed_ids]
    out = np.empty(idx.shape, np.int32)
    for k in sorted(set(per_row)):
      rows = [r for r, kr in enumerate(per_row) if kr == k]
      out[rows] = seeds.random_labels(
        self.root_seed, [seed_ids[r] for r in rows], None, k, idx=idx[rows]
      )
    return out


class HostFeed(feed_lib.Feed):
  """The engine's batches for members `seed_ids` from a `data.Source`, chunk by chunk.

  Args:
    source: a `rl_align.data.Source` (len N, take(idx) -> (x, y)).
    seed_ids: the members this process feeds, in row order (engine seed ids, padding included).
    data_seed: the engine's root seed (config.seed): the data order.
    batch_size: B.
    labels: None (the source's labels), RandomLabels(root_seed, K), or an int array [N] (shared)
      or [len(seed_ids), N] (per member).
    mean, std: per-channel statistics; None: no standardization.
    num_threads: grain threads preparing chunks (each chunk on one thread, in order).
    prefetch: chunks prepared ahead of the consumer.
    chunk_bytes: the float32 inputs of one chunk stay under this (`max_chunk_steps`).
  """

  def __init__(
    self,
    source: data_lib.Source,
    *,
    seed_ids: Sequence[int],
    data_seed: int,
    batch_size: int,
    labels=None,
    mean=None,
    std=None,
    num_threads: int = 1,
    prefetch: int = 1,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
  ):
    self.source, self.seed_ids = source, [int(s) for s in seed_ids]
    self.data_seed, self.batch_size = int(data_seed), int(batch_size)
    self.n = len(source)
    if not self.seed_ids:
      raise errors.ConfigError("HostFeed needs at least one seed id. Fix: pass seed_ids.")
    self.steps_per_epoch = _check_steps(self.n, self.batch_size, 0, 0)
    self.example_shape = tuple(source.example_shape)
    if isinstance(labels, RandomLabels):
      labels.check()
    elif labels is not None:
      labels = np.asarray(labels)
      if (
        labels.ndim not in (1, 2)
        or labels.shape[-1] != self.n
        or (labels.ndim == 2 and labels.shape[0] != len(self.seed_ids))
        or not np.issubdtype(labels.dtype, np.integer)
      ):
        raise errors.DataError(
          f"HostFeed labels must be int [N={self.n}] or [S={len(self.seed_ids)}, N], got "
          f"{labels.shape} {labels.dtype}. Fix: pass the source's labels (None), "
          "RandomLabels(root_seed, K), or such an array."
        )
    self.labels = labels
    self.reader = Reader(source, mean, std)
    self.mean, self.std = mean, std
    if num_threads < 1 or prefetch < 1 or chunk_bytes < 1:
      raise errors.ConfigError(
        f"HostFeed: num_threads, prefetch and chunk_bytes must be >= 1, "
        f"got {num_threads}, {prefetch} and {chunk_bytes}."
      )
    self.num_threads, self.prefetch = int(num_threads), int(prefetch)
    self.chunk_bytes = int(chunk_bytes)
    self._perms = collections.OrderedDict()
    self._lock = threading.Lock()

  @property
  def n_members(self) -> int:
    return len(self.seed_ids)

  def _perm(self, seed_id: int, epoch: int) -> np.ndarray:
    key = (seed_id, epoch)
    with self._lock:
      if key in self._perms:
        self._perms.move_to_end(key)
        return self._perms[key]
    perm = epoch_permutation(self.data_seed, seed_id, epoch, self.n)
    with self._lock:
      self._perms[key] = perm
      while len(self._perms) > 2 * self.n_members:  # the current and the next epoch
        self._perms.popitem(last=False)
    return perm

  def indices(self, t0: int, t1: int) -> np.ndarray:
    """int32 [S, T, B]: each member's example indices at steps t0..t1-1."""
    _check_steps(self.n, self.batch_size, t0, t1)
    spe, b = self.steps_per_epoch, self.batch_size
    out = np.empty((self.n_members, t1 - t0, b), np.int32)
    for e in range(t0 // spe, -(-t1 // spe)):
      lo, hi = max(t0, e * spe), min(t1, (e + 1) * spe)
      i0 = lo - e * spe
      for r, sid in enumerate(self.seed_ids):
        perm = self._perm(sid, e)
        out[r, lo - t0 : hi - t0] = perm[i0 * b : (i0 + hi - lo) * b].reshape(hi - lo, b)
    return out

  def labels_at(self, idx: np.ndarray, source_labels: Optional[np.ndarray] = None) -> np.ndarray:
    """int32 [S, ...] labels of member rows `idx` [S, ...]."""
    if isinstance(self.labels, RandomLabels):
      return self.labels.at(self.seed_ids, idx)
    if self.labels is None:
      return np.asarray(source_labels, np.int32).reshape(idx.shape)
    if self.labels.ndim == 1:
      return self.labels[idx].astype(np.int32)
    return (
      np.take_along_axis(self.labels, idx.reshape(len(idx), -1), axis=1)
      .reshape(idx.shape)
      .astype(np.int32)
    )

  def load(self, t0: int, t1: int) -> Chunk:
    """Steps t0..t1-1 of every member, synchronously."""
    idx = self.indices(t0, t1)
    x, y_src = self.reader(idx.reshape(-1))
    x = x.reshape(idx.shape + self.example_shape)
    return Chunk(t0, t1, x, self.labels_at(idx, y_src))

  def head(self, m: int) -> tuple:
    """The engine's "train" eval set: (x [m, ...] of examples 0..m-1, labels [S, m])."""
    m = min(int(m), self.n)
    x, y_src = self.reader(np.arange(m))
    idx = np.broadcast_to(np.arange(m, dtype=np.int32), (self.n_members, m))
    y = self.labels_at(idx, np.broadcast_to(y_src, (self.n_members, m)))
    return x, y

  def dataset(self, bounds: Sequence[tuple], put: Optional[Callable[[Chunk], Chunk]] = None):
    """A grain IterDataset of the chunks `bounds`, prepared `prefetch` ahead on grain threads
    (and placed on devices there, by `put`, e.g. `putter(sharding)`)."""
    bounds = [(int(a), int(b)) for a, b in bounds]
    ds = grain.MapDataset.source(bounds).map(lambda tb: self.load(*tb))
    if put is not None:
      ds = ds.map(put)
    return ds.to_iter_dataset(
      grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=self.prefetch)
    )

  def chunks(self, bounds: Sequence[tuple], put: Optional[Callable[[Chunk], Chunk]] = None):
    """Iterates the chunks `bounds` in order (see `dataset`)."""
    return iter(self.dataset(bounds, put))

  def buffers(self, sharding, member_ids: Sequence[int], start: int, stop: int):
    """The engine's buffers (`engine.feed.Feed.buffers`): chunks of one length T (at most
    `chunk_bytes` of inputs), consecutive from `start` until they cover `stop`, of the members
    this process's devices hold under `sharding` (a feed for their seed ids; prefetched on a
    grain thread and placed on the devices there)."""
    rows = local_rows(sharding, len(member_ids))
    local = HostFeed(
      self.source,
      seed_ids=[member_ids[r] for r in rows],
      data_seed=self.data_seed,
      batch_size=self.batch_size,
      labels=self.labels,
      mean=self.mean,
      std=self.std,
      num_threads=self.num_threads,
      prefetch=self.prefetch,
      chunk_bytes=self.chunk_bytes,
    )
    length = min(
      stop - start,
      max_chunk_steps(len(rows), self.batch_size, self.example_shape, self.chunk_bytes),
    )
    bounds = [(t, t + length) for t in range(start, stop, length)]  # the last may run past stop
    return local.chunks(bounds, putter(sharding))
