"""Tests for rl_align.pipeline: the engine's batch order and random labels on the host, chunks.

    pytest -q tests/test_pipeline.py

Every comparison here is exact (integers, or float32 values produced by the same elementwise ops).
"""

import threading

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from rl_align import data
from rl_align import errors
from rl_align import models
from rl_align import pipeline
from rl_align import seeds
from rl_align import train
from rl_align.engine import config as engine_config

PHOTOS = {"n": 600, "size": 8, "short_side": 64, "cell": 12, "seed": 0}


# ---------------------------------------------------------------------------- labels


@pytest.mark.parametrize("n", [1, 1000, 70_001])
def test_random_labels_at_indices_are_the_engine_draw(n):
  rng = np.random.default_rng(n)
  # K = 100_003 > 2**16 exercises randint's uint32 wrap-around in the 2**32 mod K multiplier.
  for k in (1, 2, 10, 1000, 100_003):
    ref = seeds.random_labels(7, [0, 3], n, k)
    for row, sid in enumerate([0, 3]):
      idx = rng.integers(0, n, size=(3, 11))
      got = seeds.random_labels(7, [sid], None, k, idx=idx[None])[0]
      assert got.dtype == np.int32 and got.shape == idx.shape
      np.testing.assert_array_equal(got, ref[row][idx])
  # every index of a small draw, and the batched form for several members at once
  ref = seeds.random_labels(2, [5, 1, 4], 50, 10)
  idx = np.broadcast_to(np.arange(50), (3, 50))
  np.testing.assert_array_equal(seeds.random_labels(2, [5, 1, 4], None, 10, idx=idx), ref)


def test_random_labels_at_indices_refuse_a_non_partitionable_prng():
  jax.config.update("jax_threefry_partitionable", False)
  try:
    with pytest.raises(errors.ConfigError, match="jax_threefry_partitionable"):
      seeds.random_labels(0, [0], None, 10, idx=[[1, 2]])
  finally:
    jax.config.update("jax_threefry_partitionable", True)


# ---------------------------------------------------------------------------- order


def test_batch_indices_equal_the_device_formula():
  """The engine's seed_chunk formula, run on the device, against the host function."""
  n, b, spe = 53, 8, 53 // 8
  key = seeds.seed_key(4, 6, seeds.DATA_STREAM)

  @jax.jit
  def device(t):
    i, epoch = t % spe, t // spe
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
    return jax.lax.dynamic_slice_in_dim(perm, i * b, b)

  host = pipeline.batch_indices(4, 6, n, b, 3, 3 + 3 * spe)  # crosses two epoch boundaries
  want = np.stack([np.asarray(device(jnp.int32(t))) for t in range(3, 3 + 3 * spe)])
  np.testing.assert_array_equal(host, want)
  assert len(set(host[spe - 3 : 2 * spe - 3].ravel())) == spe * b  # one epoch: no repeats


def test_batch_indices_and_labels_are_what_the_engine_trains_on():
  """A linear model on one-hot inputs: one SGD step changes exactly the head rows of the batch's
  examples, and the example's label column moves the most (the cross-entropy gradient is
  p - onehot(y)).  Snapshots at every step read each step's batch and labels off the engine."""
  n, b, steps, k = 12, 4, 7, 5  # 3 steps per epoch: steps 0..6 cross two epoch boundaries
  cfg = engine_config.default_config()
  cfg.optimizer, cfg.learning_rate, cfg.batch_size = "sgd", 1.0, b
  cfg.num_seeds, cfg.seed_offset, cfg.seed, cfg.num_steps = 3, 2, 9, steps
  cfg.snapshot_steps = tuple(range(steps + 1))
  cfg.train_eval_examples = 0
  ids = seeds.seed_ids(cfg)
  labels = seeds.random_labels(5, ids, n, k)
  x = np.eye(n, dtype=np.float32)
  res = train.train(models.DenseNet(widths=(), num_classes=k), cfg, x, labels)
  kernels = {t: s["first_kernel"] for t, s in res.snapshots.items()}  # [S, n, K] head kernel
  feed = pipeline.HostFeed(
    data.ArraySource(x, np.zeros(n, np.int32), k),
    seed_ids=ids,
    data_seed=9,
    batch_size=b,
    labels=pipeline.RandomLabels(5, k),
  )
  idx = feed.indices(0, steps)
  y = feed.labels_at(idx)
  for t in range(steps):
    diff = kernels[t + 1] - kernels[t]
    for s in range(len(ids)):
      moved = np.flatnonzero(np.abs(diff[s]).max(axis=1) > 0)
      assert sorted(moved) == sorted(idx[s, t]), (t, s)
      np.testing.assert_array_equal(diff[s][idx[s, t]].argmax(axis=1), y[s, t])


# ---------------------------------------------------------------------------- chunks


def _feed(labels, **kw):
  src = data.source("photos", **PHOTOS)
  mean, std = data.channel_stats(src)
  return (
    pipeline.HostFeed(
      src, seed_ids=[3, 0, 5], data_seed=1, batch_size=32, labels=labels, mean=mean, std=std, **kw
    ),
    mean,
    std,
  )


def test_chunk_is_the_standardized_batch_with_its_labels():
  ds = data.load("photos", **PHOTOS)
  rand = pipeline.RandomLabels(2, 7)
  feed, mean, std = _feed(rand)
  np.testing.assert_array_equal(mean, data.channel_stats(ds.x)[0])  # streamed == in memory
  x = data.standardize(ds.x, mean, std)
  ref = seeds.random_labels(2, [3, 0, 5], len(ds), 7)
  c = feed.load(15, 40)  # 18 steps per epoch: crosses one boundary
  assert c.x.shape == (3, 25, 32, 8, 8, 3) and c.x.dtype == np.float32
  assert c.y.shape == (3, 25, 32) and c.y.dtype == np.int32
  for r, sid in enumerate([3, 0, 5]):
    bi = pipeline.batch_indices(1, sid, len(ds), 32, 15, 40)
    np.testing.assert_array_equal(c.x[r], x[bi])
    np.testing.assert_array_equal(c.y[r], ref[r][bi])
  # the source's own labels, shared labels [N] and per-member labels [S, N]
  for labels, want in (
    (None, np.broadcast_to(ds.y, (3, len(ds)))),
    (ds.y[::-1].copy(), np.broadcast_to(ds.y[::-1], (3, len(ds)))),
    (ref, ref),
  ):
    f, _, _ = _feed(labels)
    c2 = f.load(15, 40)
    np.testing.assert_array_equal(c2.x, c.x)
    for r in range(3):
      np.testing.assert_array_equal(c2.y[r], want[r][feed.indices(15, 40)[r]])
  hx, hy = feed.head(50)  # the engine's "train" eval set
  np.testing.assert_array_equal(hx, x[:50])
  np.testing.assert_array_equal(hy, ref[:, :50])


def test_chunks_stream_in_order_and_resume_at_any_step():
  feed, _, _ = _feed(pipeline.RandomLabels(2, 7), num_threads=2, prefetch=2)
  bounds = pipeline.chunk_bounds([18, 36, 45], start=0, max_steps=7)
  assert bounds == [(0, 7), (7, 14), (14, 18), (18, 25), (25, 32), (32, 36), (36, 43), (43, 45)]
  got = list(feed.chunks(bounds))
  assert [(c.t0, c.t1) for c in got] == bounds
  whole = feed.load(0, 45)
  np.testing.assert_array_equal(np.concatenate([c.x for c in got], axis=1), whole.x)
  np.testing.assert_array_equal(np.concatenate([c.y for c in got], axis=1), whole.y)
  # the position is the step: a fresh feed started at step 25 gives the same chunks
  fresh, _, _ = _feed(pipeline.RandomLabels(2, 7))
  resumed = list(fresh.chunks(pipeline.chunk_bounds([36, 45], start=25, max_steps=7)))
  np.testing.assert_array_equal(np.concatenate([c.x for c in resumed], axis=1), whole.x[:, 25:])


def test_next_chunk_is_read_while_the_consumer_holds_this_one():
  reads = []
  second_read = threading.Event()

  class Recording(data.ArraySource):
    def _take(self, idx):
      reads.append(len(idx))
      if len(reads) == 2:
        second_read.set()
      return super()._take(idx)

  src = Recording(np.zeros((64, 4), np.float32), np.zeros(64, np.int32), 2)
  feed = pipeline.HostFeed(src, seed_ids=[0, 1], data_seed=0, batch_size=8, prefetch=1)
  it = feed.chunks([(0, 1), (1, 2), (2, 3)])
  first = next(it)
  # Not a timing check: the event is set by the read of chunk (1, 2), which must start on grain's
  # thread without the consumer asking for it (the timeout only bounds a failing test).
  assert second_read.wait(timeout=120)
  assert (first.t0, first.t1) == (0, 1) and [c.t0 for c in it] == [1, 2]


def test_put_places_chunks_sharded_over_members():
  devices = jax.local_devices()
  mesh = jax.make_mesh((len(devices),), ("seed",), devices=devices)
  sharding = NamedSharding(mesh, P("seed"))
  s = 2 * len(devices)
  assert pipeline.local_rows(sharding, s) == list(range(s))  # one process holds every row
  src = data.source("photos", **PHOTOS)
  feed = pipeline.HostFeed(src, seed_ids=range(s), data_seed=0, batch_size=16)
  c = next(feed.chunks([(0, 3)], put=pipeline.putter(sharding)))
  assert isinstance(c.x, jax.Array) and c.x.shape == (s, 3, 16, 8, 8, 3)
  assert c.x.sharding.is_equivalent_to(sharding, c.x.ndim)
  np.testing.assert_array_equal(np.asarray(c.y), feed.load(0, 3).y)


def test_chunk_sizes_and_errors():
  assert pipeline.max_chunk_steps(8, 128, (16, 16, 3), budget_bytes=8 * 128 * 768 * 4 * 10) == 10
  assert pipeline.max_chunk_steps(8, 128, (224, 224, 3), budget_bytes=1) == 1
  assert pipeline.chunk_bounds([5], start=5, max_steps=3) == []
  src = data.source("photos", **PHOTOS)
  with pytest.raises(errors.ConfigError, match="batch_size"):
    pipeline.HostFeed(src, seed_ids=[0], data_seed=0, batch_size=601)
  with pytest.raises(errors.DataError, match=r"\[S=2, N\]"):
    pipeline.HostFeed(
      src, seed_ids=[0, 1], data_seed=0, batch_size=8, labels=np.zeros((3, 600), np.int32)
    )
  with pytest.raises(errors.ConfigError, match="num_classes"):
    pipeline.HostFeed(
      src, seed_ids=[0], data_seed=0, batch_size=8, labels=pipeline.RandomLabels(0, 0)
    )
  with pytest.raises(errors.DataError, match="constant"):
    pipeline.HostFeed(
      src, seed_ids=[0], data_seed=0, batch_size=8, mean=np.zeros(3), std=np.array([1.0, 0.0, 1.0])
    )
  with pytest.raises(errors.DataError, match=r"in \[0, 600\)"):
    src.take([0, 600])


def test_throughput_benchmark_runs_every_arm():
  from benchmarks import host_feed_throughput as bench  # pylint: disable=g-import-not-at-top

  arms = ["load", "stream", "stream_put", "engine_device", "engine_host"]
  out = bench.run_benchmark(
    arms,
    seeds=2,
    batch_size=8,
    size=8,
    n=64,
    steps_per_chunk=2,
    chunks=1,
    repeats=1,
    num_threads=1,
    prefetch=1,
    short_side=PHOTOS["short_side"],
    cell=PHOTOS["cell"],
    features=4,
  )
  assert [r["arm"] for r in out["arms"]] == arms
  for r in out["arms"]:  # no timing thresholds: positive and finite
    for key in ("steps_per_s", "batches_per_s", "mb_per_s", "cpu_s_per_step"):
      assert np.isfinite(r[key]) and r[key] > 0, (r["arm"], key)
    assert r["batches_per_s"] == pytest.approx(2 * r["steps_per_s"])
  host = out["arms"][-1]
  assert host["params_equal"] is True  # host-fed and device-resident: the same parameters
  assert np.isfinite(host["vs_engine_device"]) and host["vs_engine_device"] > 0
  assert out["workload"]["bytes_per_step"] == 4 * 2 * 8 * 8 * 8 * 3
  with pytest.raises(errors.ConfigError, match="unknown arms"):
    bench.run_benchmark(["loud"], 2, 8, 8, 64, 2, 1, 1, 1, 1, 64, 12)
