"""The one input type: a split of an experiment's data, whatever its placement.

`load(config)` reads config.data (and config.split) and decides once, by config.data.placement
("device" | "host" | "auto", by size), where the splits live: as arrays the engine puts on its
devices (`ArraySplit`), or as a stream the host reads batch by batch (`StreamSplit`: nothing
loaded; `rl_align.pipeline`).  Both give the same examples, labels and floats, so a runner never
asks which it has::

    from rl_align import inputs
    data = inputs.load(config, folder)       # Data: parts {"train"} or {"upstream", "downstream", "test"}
    part = data.parts["train"]
    part.example_shape, len(part)            # (16, 16, 3), 5000
    x0, y0 = part.head(256)                  # the first 256 examples, as trained on
    for xb in part.batches(512): ...         # every input in order (e.g. a patch covariance)
    labels = inputs.RandomLabels.of(root_seed=0, seed_ids=[0, 1], num_classes=10)   # or inputs.REAL
    x, y = part.engine_input(config.train, labels)     # what train.call takes: arrays or a host feed

A third placement (e.g. a memory-mapped file) is one more `Split` subclass here.
"""

import abc
import dataclasses
import os
from typing import Any, Iterator, Sequence

from absl import logging
import numpy as np

from rl_align import data as data_lib
from rl_align import errors
from rl_align import pipeline
from rl_align import results
from rl_align import seeds

STATS_FILE = "standardization.json"


# ----------------------------------------------------------------------------------------------
# Labels.


@dataclasses.dataclass(frozen=True)
class RandomLabels:
  """Each member's own random labels: seed id s draws seeds.random_labels(root_seed, [s], N, K),
  K = num_classes (an int, or one K per seed id)."""

  root_seed: int
  seed_ids: tuple
  num_classes: Any

  @classmethod
  def of(cls, root_seed: int, seed_ids: Sequence[int], num_classes) -> "RandomLabels":
    """The random labels of the engine's seed ids (`seeds.seed_ids(cfg)`)."""
    return cls(int(root_seed), tuple(int(s) for s in seed_ids), num_classes)

  def per_seed(self) -> list[int]:
    return [int(k) for k in np.broadcast_to(self.num_classes, (len(self.seed_ids),))]


class _Real:
  """The split's own labels."""

  def __repr__(self) -> str:
    return "REAL"


REAL = _Real()


def head_labels(part: "Split", labels, m: int) -> np.ndarray:
  """The labels of a split's first m examples (`Split.head`): its own [m] (REAL), or each seed's
  random draw there [S, m] (the very labels the engine trains those examples with)."""
  m = min(int(m), len(part))
  if labels is REAL:
    return part.head(m)[1]
  ks = labels.per_seed()
  out = np.empty((len(labels.seed_ids), m), np.int32)
  for k in sorted(set(ks)):
    rows = [r for r, kr in enumerate(ks) if kr == k]
    out[rows] = seeds.random_labels(
      labels.root_seed,
      [labels.seed_ids[r] for r in rows],
      None,
      k,
      idx=np.tile(np.arange(m), (len(rows), 1)),
    )
  return out


def config_labels(config):
  """The labels config.labels asks for: 'random' (config.train's seeds, config.num_classes
  classes, root seed config.train.seed) or 'real'."""
  if config.labels == "random":
    return RandomLabels.of(config.train.seed, seeds.seed_ids(config.train), config.num_classes)
  if config.labels == "real":
    return REAL
  raise errors.ConfigError(
    f"config.labels must be 'random' or 'real', got {config.labels!r}. Fix: --config.labels=random."
  )


# ----------------------------------------------------------------------------------------------
# Splits.


class Split(abc.ABC):
  """One split: len, example_shape, num_classes, name; its first examples (`head`), its inputs in
  order (`batches`), its labels, and what the engine trains on (`engine_input`)."""

  name: str
  num_classes: int
  placement: str

  @abc.abstractmethod
  def __len__(self) -> int: ...

  @property
  @abc.abstractmethod
  def example_shape(self) -> tuple: ...

  @abc.abstractmethod
  def head(self, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(x [m, ...] float32, y [m] int32): the first m examples (all when fewer), as trained on."""

  @abc.abstractmethod
  def examples(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(x, y) of every example in order, batch_size at a time (the last may be shorter)."""

  def batches(self, batch_size: int) -> Iterator[np.ndarray]:
    """The inputs of `examples`."""
    for x, _ in self.examples(batch_size):
      yield x

  @abc.abstractmethod
  def engine_input(self, cfg, labels, pipeline_cfg=None) -> tuple:
    """(x, labels) of `train.call` for engine config cfg with `labels` (REAL or RandomLabels)."""


class ArraySplit(Split):
  """A split loaded as arrays (`data.ArrayDataset`): the engine puts them on its devices."""

  placement = "device"

  def __init__(self, ds: data_lib.ArrayDataset):
    self.ds, self.name, self.num_classes = ds, ds.name, ds.num_classes

  def __len__(self) -> int:
    return len(self.ds.x)

  @property
  def example_shape(self) -> tuple:
    return tuple(self.ds.x.shape[1:])

  @property
  def x(self) -> np.ndarray:
    return self.ds.x

  @property
  def y(self) -> np.ndarray:
    return self.ds.y

  def head(self, m):
    m = min(int(m), len(self))
    return self.ds.x[:m], self.ds.y[:m]

  def examples(self, batch_size):
    for j in range(0, len(self), batch_size):
      yield self.ds.x[j : j + batch_size], self.ds.y[j : j + batch_size]

  def engine_input(self, cfg, labels, pipeline_cfg=None):
    del cfg, pipeline_cfg
    if labels is REAL:
      return self.ds.x, self.ds.y.astype(np.int32)
    ks = labels.per_seed()
    out = np.empty((len(labels.seed_ids), len(self)), np.int32)
    for k in sorted(set(ks)):  # one draw per K; each seed id's row is its own draw
      rows = [r for r, kr in enumerate(ks) if kr == k]
      out[rows] = seeds.random_labels(
        labels.root_seed, [labels.seed_ids[r] for r in rows], out.shape[1], k
      )
    return self.ds.x, out


class StreamSplit(Split):
  """A split read from its source batch by batch (`pipeline.Reader`: standardized as loaded
  arrays are, to the same floats); the engine trains on a `pipeline.HostFeed` of it."""

  placement = "host"

  def __init__(self, reader: pipeline.Reader):
    self.reader = reader
    self.name, self.num_classes = reader.source.name, reader.source.num_classes

  def __len__(self) -> int:
    return len(self.reader)

  @property
  def example_shape(self) -> tuple:
    return tuple(self.reader.source.example_shape)

  def head(self, m):
    return self.reader(np.arange(min(int(m), len(self))))

  def examples(self, batch_size):
    for j in range(0, len(self), batch_size):
      yield self.reader(np.arange(j, min(len(self), j + batch_size)))

  def engine_input(self, cfg, labels, pipeline_cfg=None):
    p = dict(pipeline_cfg or {})
    if labels is REAL:
      host_labels = None
    else:
      ks = labels.per_seed()
      host_labels = pipeline.RandomLabels(labels.root_seed, ks[0], tuple(zip(labels.seed_ids, ks)))
    feed = pipeline.HostFeed(
      self.reader.source,
      seed_ids=seeds.seed_ids(cfg),
      data_seed=int(cfg.seed),
      batch_size=int(cfg.batch_size),
      labels=host_labels,
      mean=self.reader.mean,
      std=self.reader.std,
      num_threads=int(p.get("num_threads", 1)),
      prefetch=int(p.get("prefetch", 1)),
      chunk_bytes=int(p.get("chunk_mb", pipeline.DEFAULT_CHUNK_BYTES >> 20)) << 20,
    )
    return feed, None


# ----------------------------------------------------------------------------------------------
# config.data -> splits.


def source_kwargs(dcfg) -> dict:
  """config.data.kwargs as keyword arguments of `data.load` (lists become tuples)."""
  kw = dict(dcfg.get("kwargs", {}))
  return {k: (tuple(v) if isinstance(v, list) else v) for k, v in kw.items()}


def _kwargs(dcfg, split: str) -> dict:
  kw = data_lib.split_kwargs(dcfg.name, split, dcfg.get("data_dir") or None)
  return {**kw, **source_kwargs(dcfg)}


def load_split(dcfg, split: str) -> data_lib.ArrayDataset:
  """One split of config.data as arrays (`data.split_kwargs` says which sources take split /
  data_dir)."""
  return data_lib.load(dcfg.name, **_kwargs(dcfg, split))


def source_split(dcfg, split: str) -> data_lib.Source:
  """One split of config.data as a streaming `data.Source` (nothing loaded): `load_split`'s rows."""
  return data_lib.source(dcfg.name, **_kwargs(dcfg, split))


def stats_examples(dcfg):
  """config.data.stats_examples as channel_stats' max_examples (absent or 0: every example)."""
  return int(dcfg.get("stats_examples", 0) or 0) or None


def _cut_splits(config, train, open_split):
  """(parts, indices) from the train split `train` (anything with len and subset) and
  open_split(name) -> another split: config.split's disjoint parts, or {"train": train}."""
  dcfg = config.data
  if "split" not in config:
    return {"train": train}, {}
  sp = config.split
  sizes = {"upstream": int(sp.upstream), "downstream": int(sp.downstream)}
  if int(sp.get("test", 0)) > 0:
    sizes["test"] = int(sp.test)
  idx = data_lib.split_indices(len(train), sizes, seed=int(sp.seed))
  parts = {k: train.subset(v) for k, v in idx.items()}
  if "test" not in parts:
    if "split" not in data_lib.split_kwargs(dcfg.name, "test"):
      raise errors.ConfigError(
        f"{dcfg.name} has no test split: config.split.test is 0. Fix: carve one out of its "
        f"{len(train)} examples, e.g. --config.split.test={len(train) // 5}."
      )
    test = open_split(dcfg.get("test_split", "test"))
    cap = int(dcfg.get("test_examples", 0) or 0)
    parts["test"] = test.subset(np.arange(min(cap, len(test)))) if cap else test
  return parts, idx


def load_splits(config) -> tuple[dict[str, data_lib.ArrayDataset], dict[str, np.ndarray]]:
  """config.data's train split as datasets, standardized per channel with the first one's
  statistics (its first config.data.stats_examples examples; absent or 0: all) when
  config.data.standardize (default True); returns (parts, indices).

  Without config.split: {"train": the whole split}.  With config.split {upstream, downstream,
  test, seed}: one seeded permutation cuts disjoint "upstream" and "downstream" parts, and "test"
  when split.test > 0; otherwise "test" is the source's config.data.test_split (default "test"),
  capped at config.data.test_examples (0: all).
  """
  dcfg = config.data
  parts, idx = _cut_splits(config, load_split(dcfg, "train"), lambda s: load_split(dcfg, s))
  if dcfg.get("standardize", True):
    mean, std = data_lib.channel_stats(_first(parts).x, stats_examples(dcfg))
    parts = {
      k: data_lib.ArrayDataset(data_lib.standardize(p.x, mean, std), p.y, p.num_classes, p.name)
      for k, p in parts.items()
    }
  return parts, idx


def source_splits(config) -> tuple[dict[str, data_lib.Source], dict[str, np.ndarray]]:
  """`load_splits` without loading: the same parts (same rows, same order) as views of
  `data.Source`s."""
  dcfg = config.data
  return _cut_splits(config, source_split(dcfg, "train"), lambda s: source_split(dcfg, s))


def split_stats(config, folder: str | None, first: data_lib.Source):
  """(mean, std) per channel of `first` (its first config.data.stats_examples examples), streamed,
  computed once and kept in folder/standardization.json (a rerun reads them back; folder None:
  computed, not kept); the numbers `load_splits` standardizes with, bit for bit.  (None, None)
  without config.data.standardize."""
  dcfg = config.data
  if not dcfg.get("standardize", True):
    return None, None
  out = results.read_json(folder, STATS_FILE) if folder else None
  if out is None:
    mean, std = data_lib.channel_stats(first, stats_examples(dcfg))
    out = json_roundtrip(
      {
        "mean": mean,
        "std": std,
        "source": first.name,
        "examples": min(len(first), stats_examples(dcfg) or len(first)),
      }
    )
    if folder:
      results.write_json(folder, STATS_FILE, out)
  return np.asarray(out["mean"], np.float64), np.asarray(out["std"], np.float64)


def json_roundtrip(obj: Any) -> Any:
  """obj as it reads back from JSON (numpy -> lists, nan -> None)."""
  import json  # pylint: disable=g-import-not-at-top

  return json.loads(json.dumps(results.to_jsonable(obj)))


def _first(parts: dict):
  """The split the statistics come from: upstream, or the only one (train)."""
  return parts["upstream" if "upstream" in parts else "train"]


def _train_size(parts) -> int:
  return max(len(v) for k, v in parts.items() if k != "test")


# ----------------------------------------------------------------------------------------------
# The placement decision and the loaded data.


@dataclasses.dataclass
class Data:
  """A runner's splits (`load`).

  parts: split name ("train", or "upstream", "downstream", "test") -> a `Split`.
  num_classes: the source's classes.  indices: `data.split_indices`' rows ({} without config.split).
  pipeline: config.data.pipeline (the host feed's num_threads, prefetch, chunk_mb; may be empty).
  placement: "device" or "host" (what config.data.placement resolved to; for the record only).
  """

  parts: dict
  num_classes: int
  indices: dict
  pipeline: dict
  placement: str

  @property
  def sizes(self) -> dict:
    """Examples per split."""
    return {k: len(v) for k, v in self.parts.items()}

  def engine_input(self, part: str, cfg, labels) -> tuple:
    """(x, labels) of `train.call`: split `part` with `labels` for engine config cfg."""
    return self.parts[part].engine_input(cfg, labels, self.pipeline)


def resolve_placement(requested: str, num_seeds: int, n: int, example_shape) -> str:
  """Where a training set of n examples goes for config.data.placement `requested` ("auto" |
  "device" | "host"), logged: `data.choose_placement` against this process's first device."""
  where, line = data_lib.choose_placement(
    n, example_shape, int(num_seeds), data_lib.device_memory_bytes(), requested
  )
  logging.info("%s", line)
  return where


def load(config, folder: str | None = None, placement: str | None = None) -> Data:
  """config.data's splits where config.data.placement (absent: "device"; `placement` overrides)
  says: "device" loads them as arrays; "host" loads nothing (streamed splits over
  `source_splits`, standardized with `split_stats` kept in folder); "auto" picks by the size of
  the largest training split (`resolve_placement`, logged either way)."""
  requested = placement or config.data.get("placement", "device")
  data_lib.check_placement(requested)
  num_seeds = int(config.train.num_seeds)
  pipe = dict(config.data.get("pipeline", {}) or {})
  if requested == "device":  # nothing to decide: load, then check the size and log it
    out = _arrays(config, pipe)
    resolve_placement("device", num_seeds, _train_size(out.parts), _first(out.parts).example_shape)
    return out
  parts, idx = source_splits(config)
  first = _first(parts)
  if resolve_placement(requested, num_seeds, _train_size(parts), first.example_shape) == "device":
    return _arrays(config, pipe)
  if folder:
    os.makedirs(folder, exist_ok=True)
  mean, std = split_stats(config, folder, first)
  return Data(
    {k: StreamSplit(pipeline.Reader(v, mean, std)) for k, v in parts.items()},
    first.num_classes,
    idx,
    pipe,
    "host",
  )


def _arrays(config, pipe) -> Data:
  parts, idx = load_splits(config)
  return Data(
    {k: ArraySplit(v) for k, v in parts.items()}, _first(parts).num_classes, idx, pipe, "device"
  )
