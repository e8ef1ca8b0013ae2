"""Host input pipeline throughput (`rl_align.pipeline`): batches/s and MB/s of the paper CNN's input.

Workload: the engine's batches of S members (default 8) on the embedded `photos` (32x32x3 crops,
the paper CNN's input; batch 256), each chunk [S, T, B, 32, 32, 3] float32 standardized, with
per-member random labels.  Arms (``--arms``):

- ``load``: `HostFeed.load` called chunk after chunk on the main thread (no prefetch): the
  pipeline's own cost.
- ``stream``: `HostFeed.chunks` (grain, chunks prepared ``--prefetch`` ahead on ``--num_threads``
  threads), consumed as fast as they come.
- ``stream_put``: as ``stream``, and each chunk placed on the devices sharded over members
  (`pipeline.putter`), as the engine's host-fed path consumes it.
- ``engine_device``: the engine (`engine_programs.Engine.chunk`) training the paper CNN (``--features``
  filters) on the device-resident set (x replicated, per-member labels [S, N]), one call per chunk.
- ``engine_host``: the same engine training on the ``stream_put`` chunks (`Engine.chunk_fed`),
  the pipeline running on its grain thread meanwhile: ``vs_engine_device`` is the issue's
  host-fed / device-resident ratio of model-steps/s.  Both engine arms start from the same init and
  train the same batches, so their final parameters must be equal (``params_equal``).

Each arm runs ``--chunks`` chunks of ``--steps_per_chunk`` steps after one warm-up chunk (which
compiles the permutation and label functions); ``--repeats`` rounds in an order that rotates per
round (the machine is shared: compare arms of one run); an arm's time is its best round.
Reported per arm: ``batches_per_s`` (member-batches of B examples, = model-steps/s), ``steps_per_s``
(engine steps: all S members), ``mb_per_s`` (float32 input bytes produced or consumed) and
``cpu_s_per_step`` (process CPU time per engine step, contention-robust).  The JSON also records the load average: a number taken
while other jobs run is "measured under load".

Usage::

    python -m benchmarks.host_feed_throughput --seeds=8 --json=/tmp/feed.json
    python -m benchmarks.host_feed_throughput --seeds=8 --arms=stream --num_threads=2 --prefetch=2
    # the issue's comparison: host-fed vs device-resident paper CNN, S=8, side by side
    python -m benchmarks.host_feed_throughput --seeds=8 --arms=engine_device,engine_host \
        --steps_per_chunk=2 --chunks=2 --repeats=2 --json=/tmp/engine_feed.json

Extending: register an arm class in ``ARMS`` with ``setup()``, ``run()`` (one timed round),
``steps()`` (engine steps per round) and ``close()``.
"""

import os
import platform
import sys
import time

from absl import app
from absl import flags
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from benchmarks import output
from experiments import host_devices
from rl_align import data
from rl_align import errors
from rl_align import machine
from rl_align import models
from rl_align import pipeline
from rl_align import seeds as seeds_lib
from rl_align.engine import config as engine_config
from rl_align.engine import programs as engine_programs

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags; defined only when run as a script, so importing this module (tests)
  never collides with another benchmark's flags in the same process."""
  flags.DEFINE_integer("seeds", 8, "Members S fed at once.")
  flags.DEFINE_integer("batch_size", 256, "Examples per member per step (the paper CNN's batch).")
  flags.DEFINE_integer("size", 32, "Crop side (the paper CNN's input is 32x32x3).")
  flags.DEFINE_integer("num_examples", 5000, "Photo crops in the training set.")
  flags.DEFINE_integer("short_side", 256, "Photos resized to this short side before cropping.")
  flags.DEFINE_integer("cell", 48, "Side of the photo cells crops are cut from (>= size).")
  flags.DEFINE_integer("steps_per_chunk", 10, "Engine steps per chunk (T).")
  flags.DEFINE_integer("chunks", 4, "Chunks per timed round.")
  flags.DEFINE_integer("repeats", 2, "Timed rounds; an arm's time is its best round.")
  flags.DEFINE_integer("num_threads", 1, "grain threads preparing chunks (stream arms).")
  flags.DEFINE_integer("prefetch", 2, "Chunks prepared ahead (stream arms).")
  flags.DEFINE_integer("features", 256, "Conv filters of the paper CNN (engine arms).")
  flags.DEFINE_list(
    "arms",
    ["load", "stream", "stream_put"],
    "Arms: load, stream, stream_put, engine_device, engine_host.",
  )
  flags.DEFINE_string("json", None, "Write the results here (JSON).")


class _FeedArm:
  """One way of consuming the feed; a round runs `chunks` chunks after the ones already used."""

  def __init__(self, feed: pipeline.HostFeed, chunks: int, steps_per_chunk: int):
    self.feed, self.chunks, self.t = feed, chunks, steps_per_chunk
    self.start = 0

  def _bounds(self):
    b = [(self.start + i * self.t, self.start + (i + 1) * self.t) for i in range(self.chunks)]
    self.start += self.chunks * self.t
    return b

  def setup(self) -> float:
    t0 = time.perf_counter()
    self.start = 0
    self.run()  # warm-up: compiles the permutation and label functions for these shapes
    return time.perf_counter() - t0

  def steps(self) -> int:
    return self.chunks * self.t

  def close(self) -> None:
    pass


class LoadArm(_FeedArm):
  def run(self) -> None:
    for t0, t1 in self._bounds():
      self.feed.load(t0, t1)


class StreamArm(_FeedArm):
  put = None

  def run(self) -> None:
    for c in self.feed.chunks(self._bounds(), put=self.put):
      if isinstance(c.x, jax.Array):
        c.x.block_until_ready()


class StreamPutArm(StreamArm):
  def __init__(self, *args):
    super().__init__(*args)
    devices = jax.local_devices()
    n = max(d for d in range(1, len(devices) + 1) if self.feed.n_members % d == 0)
    mesh = jax.make_mesh((n,), ("member",), devices=devices[:n])
    self.put = pipeline.putter(NamedSharding(mesh, P("member")))


class _EngineArm(_FeedArm):
  """The paper CNN in `engine_programs.Engine`, S members, trained chunk by chunk."""

  features = 256

  def setup(self) -> float:
    t0 = time.perf_counter()
    feed = self.feed
    cfg = engine_config.default_config()
    cfg.num_seeds, cfg.batch_size, cfg.seed, cfg.num_steps = (
      feed.n_members,
      feed.batch_size,
      feed.data_seed,
      10**6,
    )
    model = models.PaperCNN(features=self.features, num_classes=feed.labels.num_classes)
    eng = engine_programs.Engine(model, cfg, (feed.n,) + feed.example_shape, feed.n_members)
    members = seeds_lib.Members.of(cfg).padded(eng.m_pad)
    self.eng, self.members, self.layout = eng, members, eng.layout.name
    self.state = eng.initial_state(members)
    self._inputs(feed, cfg)
    self.start = 0
    self.run()  # warm-up: compiles the chunk
    return time.perf_counter() - t0

  def params(self):
    return engine_programs.to_host(self.state.params, self.feed.n_members)

  def close(self) -> None:
    self.state = self.eng = None


class EngineDeviceArm(_EngineArm):
  def _inputs(self, feed, cfg):
    x, _ = feed.head(feed.n)  # the whole training set, standardized, on the device
    labels = seeds_lib.random_labels(
      feed.labels.root_seed, seeds_lib.seed_ids(cfg), feed.n, feed.labels.num_classes
    )
    self.inputs = self.eng.put_inputs(self.members, x, labels)

  def run(self) -> None:
    for t0, t1 in self._bounds():
      self.state, loss, _ = self.eng.chunk(self.state, self.inputs, np.int32(t0), np.int32(t1))
    jax.block_until_ready(self.state)


class EngineHostArm(_EngineArm):
  def _inputs(self, feed, cfg):
    del cfg
    rows = pipeline.local_rows(self.eng.member_sharding, self.eng.m_pad)
    self.local = pipeline.HostFeed(
      feed.source,
      seed_ids=[self.members.ids[r] for r in rows],
      data_seed=feed.data_seed,
      batch_size=feed.batch_size,
      labels=feed.labels,
      mean=feed.mean,
      std=feed.std,
      num_threads=feed.num_threads,
      prefetch=feed.prefetch,
    )
    self.hparams = self.eng.put_members(self.members.hparams())
    self.sums = (self.eng.put_members(np.zeros(self.eng.m_pad, np.float32)),) * 2
    self.put = pipeline.putter(self.eng.member_sharding)

  def run(self) -> None:
    for c in self.local.chunks(self._bounds(), put=self.put):
      self.state, *_ = self.eng.chunk_fed(
        self.state,
        self.hparams,
        self.sums,
        c.x,
        c.y,
        np.int32(c.t0),
        np.int32(0),
        np.int32(c.t1 - c.t0),
      )
    jax.block_until_ready(self.state)


ARMS = {
  "load": LoadArm,
  "stream": StreamArm,
  "stream_put": StreamPutArm,
  "engine_device": EngineDeviceArm,
  "engine_host": EngineHostArm,
}


def make_feed(
  seeds: int,
  batch_size: int,
  size: int,
  n: int,
  num_threads: int,
  prefetch: int,
  short_side: int = 256,
  cell: int = 48,
) -> pipeline.HostFeed:
  src = data.source("photos", n=n, size=size, short_side=short_side, cell=cell, seed=0)
  mean, std = data.channel_stats(src)
  return pipeline.HostFeed(
    src,
    seed_ids=range(seeds),
    data_seed=0,
    batch_size=batch_size,
    labels=pipeline.RandomLabels(1, 10),
    mean=mean,
    std=std,
    num_threads=num_threads,
    prefetch=prefetch,
  )


def run_benchmark(
  arms,
  seeds: int,
  batch_size: int,
  size: int,
  n: int,
  steps_per_chunk: int,
  chunks: int,
  repeats: int,
  num_threads: int,
  prefetch: int,
  short_side: int = 256,
  cell: int = 48,
  features: int = 256,
) -> dict:
  unknown = [a for a in arms if a not in ARMS]
  if unknown:
    raise errors.ConfigError(
      f"--arms has unknown arms {unknown}. Fix: use names from {sorted(ARMS)}."
    )
  host = machine.describe()  # CPU model, cores and the fp32 matmul rate, measured before the arms
  feed = make_feed(seeds, batch_size, size, n, num_threads, prefetch, short_side, cell)
  objs = {a: ARMS[a](feed, chunks, steps_per_chunk) for a in arms}
  for o in objs.values():
    o.features = features
  setup_s = {a: o.setup() for a, o in objs.items()}
  rounds = {a: [] for a in arms}
  cpu = {a: [] for a in arms}
  for r in range(repeats):
    order = arms[r % len(arms) :] + arms[: r % len(arms)]
    for a in order:
      c0, t0 = time.process_time(), time.perf_counter()
      objs[a].run()
      rounds[a].append(time.perf_counter() - t0)
      cpu[a].append(time.process_time() - c0)
  step_bytes = 4 * seeds * batch_size * size * size * 3
  rows = []
  for a in arms:
    best = min(rounds[a])
    steps = objs[a].steps()
    rows.append(
      {
        "arm": a,
        "rounds_s": rounds[a],
        "setup_s": setup_s[a],
        "steps_per_s": steps / best,
        "batches_per_s": steps * seeds / best,
        "mb_per_s": steps * step_bytes / best / 1e6,
        "cpu_s_per_step": min(cpu[a]) / steps,
      }
    )
    if isinstance(objs[a], _EngineArm):
      rows[-1].update(layout=objs[a].layout, features=features)
  by = {r["arm"]: r for r in rows}
  if "engine_device" in by and "engine_host" in by:
    by["engine_host"]["vs_engine_device"] = (
      by["engine_host"]["steps_per_s"] / by["engine_device"]["steps_per_s"]
    )
    # Same init, same batches, same number of steps: the same parameters, bit for bit.
    leaves = zip(
      jax.tree.leaves(objs["engine_device"].params()), jax.tree.leaves(objs["engine_host"].params())
    )
    by["engine_host"]["params_equal"] = all(np.array_equal(p, q) for p, q in leaves)
  for o in objs.values():
    o.close()
  return {
    "workload": {
      "source": "photos",
      "short_side": short_side,
      "cell": cell,
      "seeds": seeds,
      "batch_size": batch_size,
      "example_shape": [size, size, 3],
      "num_examples": n,
      "steps_per_chunk": steps_per_chunk,
      "chunks_per_round": chunks,
      "num_threads": num_threads,
      "prefetch": prefetch,
      "bytes_per_step": step_bytes,
    },
    "arms": rows,
    "machine": {
      **host,
      "platform": platform.platform(),
      "devices": [str(d) for d in jax.devices()],
      "load_average_1m": os.getloadavg()[0],
    },
  }


def main(argv):
  del argv
  host_devices.expose_host_cores()  # before any device use: one XLA host device per core
  try:
    out = run_benchmark(
      list(FLAGS.arms),
      FLAGS.seeds,
      FLAGS.batch_size,
      FLAGS.size,
      FLAGS.num_examples,
      FLAGS.steps_per_chunk,
      FLAGS.chunks,
      FLAGS.repeats,
      FLAGS.num_threads,
      FLAGS.prefetch,
      FLAGS.short_side,
      FLAGS.cell,
      FLAGS.features,
    )
  except errors.RLAlignError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  w = out["workload"]
  mach = out["machine"]
  print(
    f"host feed: S={w['seeds']} x B={w['batch_size']} x {tuple(w['example_shape'])} photos, "
    f"T={w['steps_per_chunk']}; {mach['cpu_model']}, {mach['cores']} cores, fp32 matmul "
    f"{mach.get('fp32_matmul_gflops', float('nan')):.0f} GFLOP/s, load average "
    f"{mach['load_average_1m']:.1f}"
  )
  for r in out["arms"]:
    extra = ""
    if "vs_engine_device" in r:
      extra = f"  {r['vs_engine_device']:.2f}x engine_device, params equal: {r['params_equal']}"
    print(
      f"  {r['arm']:<13} {r['steps_per_s']:8.2f} steps/s  {r['batches_per_s']:8.1f} "
      f"batches/s  {r['mb_per_s']:8.1f} MB/s  {r['cpu_s_per_step'] * 1e3:7.1f} ms CPU/step" + extra
    )
  output.emit(out, FLAGS.json, echo=False)


if __name__ == "__main__":
  define_flags()
  app.run(main)
