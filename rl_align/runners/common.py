"""Pieces every experiment runner shares: the one data path (config.data.placement), labels,
engine configs, params <-> npz, accuracy curves, resuming a finished phase, the workdir's config
check.

    from rl_align.runners import common
    data = common.load_data(config, workdir)         # where config.data.placement says
    data.parts                                       # {"upstream", "downstream", "test"} or {"train"}
    labels = common.make_labels(config, data)        # [S, N] / [N] arrays, or their host form
    x, labels = common.train_inputs(data, "train", config.train, labels)   # arrays or a HostFeed
    res = train.train(model, config.train, x, labels)
    x0, y0 = common.head(data.parts["train"], 256)   # the first 256 examples, either placement
    cfg = common.engine_config(config, seed=3, num_steps=300, eval_every_steps=15)
    steps, acc = common.accuracy_curve(model, init, res, x, y, phase="downstream")
    out = common.resume(folder, "downstream_scratch", lambda: {...})   # computed once, then read back

Nothing here holds state between calls.
"""
import copy
import dataclasses
import functools
import json
import os
from typing import Any, Callable, Generator, Mapping

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rl_align import curves
from rl_align import data as data_lib
from rl_align import errors
from rl_align import pipeline
from rl_align import results
from rl_align import seeds
from rl_align import train
from rl_align import workdir as workdir_lib


# ----------------------------------------------------------------------------------------------
# Config -> data and labels.


def source_kwargs(dcfg) -> dict:
  """config.data.kwargs as keyword arguments of `data.load` (lists become tuples)."""
  kw = dict(dcfg.get("kwargs", {}))
  return {k: (tuple(v) if isinstance(v, list) else v) for k, v in kw.items()}


def load_split(dcfg, split: str) -> data_lib.ArrayDataset:
  """One split of config.data (`data.split_kwargs` says which sources take split / data_dir)."""
  kw = data_lib.split_kwargs(dcfg.name, split, dcfg.get("data_dir") or None)
  return data_lib.load(dcfg.name, **kw, **source_kwargs(dcfg))


def standardize_like(train_x: np.ndarray, *others: np.ndarray, max_examples=None):
  """Per-channel standardization with the statistics of train_x (its first max_examples
  examples; None: all), applied to all arrays."""
  mean, std = data_lib.channel_stats(train_x, max_examples)
  return tuple(data_lib.standardize(a, mean, std) for a in (train_x,) + others)


def stats_examples(dcfg):
  """config.data.stats_examples as channel_stats' max_examples (absent or 0: every example)."""
  return int(dcfg.get("stats_examples", 0) or 0) or None


def _cut_splits(config, train, open_split):
  """(parts, indices) of `load_splits` / `source_splits` from the train split `train` (anything
  with len and subset) and open_split(name) -> another split."""
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
          f"{len(train)} examples, e.g. --config.split.test={len(train) // 5}.")
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
    xs = standardize_like(*(p.x for p in parts.values()), max_examples=stats_examples(dcfg))
    parts = {k: data_lib.ArrayDataset(x, p.y, p.num_classes, p.name)
             for (k, p), x in zip(parts.items(), xs)}
  return parts, idx


def source_split(dcfg, split: str) -> data_lib.Source:
  """One split of config.data as a streaming `data.Source` (nothing loaded): `load_split`'s rows."""
  kw = data_lib.split_kwargs(dcfg.name, split, dcfg.get("data_dir") or None)
  return data_lib.source(dcfg.name, **kw, **source_kwargs(dcfg))


def source_splits(config) -> tuple[dict[str, data_lib.Source], dict[str, np.ndarray]]:
  """`load_splits` without loading: the same parts (same rows, same order) as views of
  `data.Source`s; standardize them with `split_stats` and read them with `pipeline.Reader`."""
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

  def compute():
    mean, std = data_lib.channel_stats(first, stats_examples(dcfg))
    return {"mean": mean, "std": std, "examples": min(len(first), stats_examples(dcfg) or len(first)),
            "source": first.name}

  out = resume(folder, "standardization", compute) if folder else jsonable(compute())
  return np.asarray(out["mean"], np.float64), np.asarray(out["std"], np.float64)


def resolve_placement(requested: str, num_seeds: int, n: int, example_shape) -> str:
  """Where a training set of n examples goes for config.data.placement `requested` ("auto" |
  "device" | "host"), logged: `data.choose_placement` against this process's first device."""
  where, line = data_lib.choose_placement(n, example_shape, int(num_seeds),
                                          data_lib.device_memory_bytes(), requested)
  logging.info("%s", line)
  return where


# ----------------------------------------------------------------------------------------------
# One data path for every runner: config.data.placement.


@dataclasses.dataclass
class Data:
  """A runner's splits where config.data.placement put them (`load_data`).

  placement: "device" or "host" (what "auto" resolved to).
  parts: split name ("train", or "upstream", "downstream", "test") -> an `data.ArrayDataset`
    (device: loaded and standardized) or a `pipeline.Reader` (host: a view of the source,
    standardized batch by batch to the same floats).  Read them with `head` and `batches`.
  num_classes: the source's classes.  indices: `data.split_indices`' rows ({} without config.split).
  pipeline: config.data.pipeline (the host feed's num_threads, prefetch, chunk_mb; may be empty).
  """
  placement: str
  parts: dict
  num_classes: int
  indices: dict
  pipeline: dict

  @property
  def sizes(self) -> dict:
    """Examples per split."""
    return {k: len(v) for k, v in self.parts.items()}


def load_data(config, folder: str | None = None, placement: str | None = None) -> Data:
  """config.data's splits (`load_splits`' parts) where config.data.placement (absent: "device";
  `placement` overrides) says: "device" loads them as arrays; "host" loads nothing (Readers over
  `source_splits`, standardized with `split_stats` kept in folder); "auto" picks by the size of
  the largest training split (`resolve_placement`, logged either way)."""
  requested = placement or config.data.get("placement", "device")
  data_lib.check_placement(requested)
  num_seeds = int(config.train.num_seeds)
  if requested == "device":  # nothing to decide: load, then check the size and log it
    out = _device_data(config)
    resolve_placement("device", num_seeds, _train_size(out.parts), example_shape(_first(out.parts)))
    return out
  parts, idx = source_splits(config)
  first = _first(parts)
  if resolve_placement(requested, num_seeds, _train_size(parts), first.example_shape) == "device":
    return _device_data(config)
  mean, std = split_stats(config, folder, first)
  return Data("host", {k: pipeline.Reader(v, mean, std) for k, v in parts.items()},
              first.num_classes, idx, dict(config.data.get("pipeline", {}) or {}))


def _device_data(config) -> Data:
  parts, idx = load_splits(config)
  return Data("device", parts, _first(parts).num_classes, idx,
              dict(config.data.get("pipeline", {}) or {}))


def _first(parts: dict):
  """The split the statistics come from: upstream, or the only one (train)."""
  return parts["upstream" if "upstream" in parts else "train"]


def _train_size(parts) -> int:
  return max(len(v) for k, v in parts.items() if k != "test")


def example_shape(part) -> tuple:
  """The shape of one example of a split (`Data.parts`' value)."""
  if isinstance(part, pipeline.Reader):
    return tuple(part.source.example_shape)
  return tuple(part.x.shape[1:])


def head(part, m: int) -> tuple[np.ndarray, np.ndarray]:
  """(x [m, ...] float32, y [m] int32): the first m examples of a split (all when it has fewer),
  as the engine trains on them."""
  m = min(int(m), len(part))
  if isinstance(part, pipeline.Reader):
    return part(np.arange(m))
  return part.x[:m], part.y[:m]


def batches(part, batch_size: int):
  """The inputs of a split in order, batch_size examples at a time (the last may be shorter):
  slices of the array, or read from the source."""
  for j in range(0, len(part), batch_size):
    if isinstance(part, pipeline.Reader):
      yield part(np.arange(j, min(len(part), j + batch_size)))[0]
    else:
      yield part.x[j:j + batch_size]


def random_labels(data: Data, part: str, root_seed: int, seed_ids, num_classes):
  """The engine's per-seed random labels of split `part`, K = num_classes classes (an int, or one
  K per seed id): an int [S, N] table (device), or `pipeline.RandomLabels` (host: the same draws,
  computed batch by batch)."""
  ids = [int(s) for s in seed_ids]
  ks = [int(k) for k in np.broadcast_to(num_classes, (len(ids),))]
  if data.placement == "host":
    return pipeline.RandomLabels(int(root_seed), ks[0], tuple(zip(ids, ks)))
  out = np.empty((len(ids), len(data.parts[part])), np.int32)
  for k in sorted(set(ks)):   # one draw per K; each seed id's row is its own draw
    rows = [r for r, kr in enumerate(ks) if kr == k]
    out[rows] = seeds.random_labels(int(root_seed), [ids[r] for r in rows], out.shape[1], k)
  return out


def real_labels(data: Data, part: str):
  """The real labels of split `part`: int [N] (device), or None (host: the source's own)."""
  return None if data.placement == "host" else data.parts[part].y.astype(np.int32)


def make_labels(config, data: Data, part: str = "train"):
  """The labels config.labels asks for ('random': `random_labels` of config.train's seeds,
  config.num_classes classes; 'real': `real_labels`) of split `part`."""
  if config.labels == "random":
    return random_labels(data, part, config.train.seed, seeds.seed_ids(config.train),
                         config.num_classes)
  if config.labels == "real":
    return real_labels(data, part)
  raise errors.ConfigError(f"config.labels must be 'random' or 'real', got {config.labels!r}.")


def train_inputs(data: Data, part: str, cfg, labels) -> tuple:
  """(x, labels) of `train.train` for engine config cfg on split `part` with labels from
  `random_labels` / `real_labels` (or any int [N] / [S, N] array): the arrays, or on the host a
  `pipeline.HostFeed` (labels None) that streams the very batches the engine would draw."""
  if data.placement == "device":
    return data.parts[part].x, labels
  r, p = data.parts[part], data.pipeline
  feed = pipeline.HostFeed(
      r.source, seed_ids=seeds.seed_ids(cfg), data_seed=int(cfg.seed),
      batch_size=int(cfg.batch_size), labels=labels, mean=r.mean, std=r.std,
      num_threads=int(p.get("num_threads", 1)), prefetch=int(p.get("prefetch", 1)),
      chunk_bytes=int(p.get("chunk_mb", pipeline.DEFAULT_CHUNK_BYTES >> 20)) << 20)
  return feed, None


# ----------------------------------------------------------------------------------------------
# The engine.


def engine_config(config, seed: int, **fields) -> ml_collections.ConfigDict:
  """A copy of config.train with `fields` (e.g. num_steps=300; None keeps the value) replaced,
  root seed `seed` and no snapshots: the engine config of one phase of an experiment."""
  cfg = ml_collections.ConfigDict(copy.deepcopy(config.train.to_dict()))
  for k, v in fields.items():
    if v is not None:
      cfg[k] = v
  cfg.seed = int(seed)
  cfg.snapshot_steps, cfg.snapshot_epochs = (), ()
  return cfg


def flatten(params) -> dict[str, np.ndarray]:
  """Nested params -> {"layer/.../kernel": array} (npz friendly)."""
  return {"/".join(k): np.asarray(v)
          for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(params)).items()}


def unflatten(flat: Mapping[str, Any]):
  """{"layer/.../kernel": array} -> nested params (the inverse of `flatten`)."""
  return flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


@functools.lru_cache(maxsize=16)
def _predict(model):
  """The jitted argmax prediction of `model` (flax modules hash by their fields): compiled once
  per model and batch shape, not once per call."""
  return jax.jit(lambda p, xb: jnp.argmax(model.apply({"params": p}, xb), -1))


def _padded_batches(x, n: int, bs: int):
  """(x batch padded to bs rows, its rows) over x: an array, or a `pipeline.Reader` (streamed)."""
  for j in range(0, n, bs):
    if isinstance(x, pipeline.Reader):
      xb, yb = x(np.arange(j, min(n, j + bs)))
    else:
      xb, yb = x[j:j + bs], None
    k = len(xb)
    if k < bs:
      xb = np.concatenate([xb, np.zeros((bs - k,) + xb.shape[1:], xb.dtype)])
    yield xb, slice(j, j + k), yb


def accuracy(model, stacked_params, x, y, batch_size: int = 512) -> np.ndarray:
  """[S] accuracy of each seed's params on (x, y), y [M] or per seed [S, M].  Inputs are padded to
  whole batches, so all batches of a call run one compiled program.

  x may be a `pipeline.Reader` (a split streamed from its source, standardized as trained on) with
  y None: its examples and labels are read batch by batch, once for all seeds."""
  fn = _predict(model)
  streamed = isinstance(x, pipeline.Reader)
  n = len(x)
  s = jax.tree.leaves(stacked_params)[0].shape[0]
  if not streamed:
    y = np.broadcast_to(np.asarray(y), (s, n))
  bs = max(1, min(batch_size, n))
  seeds = [jax.tree.map(lambda a, i=i: a[i], stacked_params) for i in range(s)]
  correct = np.zeros(s, np.int64)
  for xb, rows, yb in _padded_batches(x, n, bs):
    k = rows.stop - rows.start
    for i, p in enumerate(seeds):
      want = yb if streamed else y[i, rows]
      correct[i] += int(np.sum(np.asarray(fn(p, xb))[:k] == want))
  return correct / n if n else np.zeros(s)


def split_accuracy(model, stacked_params, part, batch_size: int = 512) -> np.ndarray:
  """[S] accuracy of each seed's params on a split (`Data.parts`' value) with its own labels."""
  if isinstance(part, pipeline.Reader):
    return accuracy(model, stacked_params, part, None, batch_size)
  return accuracy(model, stacked_params, part.x, part.y, batch_size)


def accuracy_curve(model, init, res: train.TrainResult, x, y, *, phase: str,
                   batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
  """(steps [T + 1], train accuracy [S, T + 1]) of an engine phase started from `init`: step 0 is
  measured on init over (x, y), the phase's train-eval examples, then come the engine's values."""
  acc0 = accuracy(model, init, x, y, batch_size)
  steps, logged = curves.from_metrics(res.metrics, ["train_accuracy"], seeds=res.seed_ids,
                                      phase=phase)
  return (np.concatenate([[0], steps]),
          np.concatenate([acc0[:, None], logged["train_accuracy"]], axis=1))


# ----------------------------------------------------------------------------------------------
# The workdir.


def jsonable(obj: Any) -> Any:
  """obj as it reads back from JSON (numpy -> lists, nan -> None): what a resumed run sees."""
  return json.loads(json.dumps(results.to_jsonable(obj)))


def resume(folder: str, name: str, compute: Callable[[], Any], *, with_arrays: bool = False):
  """The result of a phase, computed once: folder/<name>.json when a run finished it, else
  compute() written there (last: its presence marks the phase finished) and returned as it reads
  back, so that a first run and a rerun return the same JSON-typed object.

  With with_arrays, compute returns (summary, {key: array}); the arrays go to folder/<name>.npz and
  the call returns (summary, arrays).
  """
  done = _finished(folder, name, with_arrays)
  return done if done is not None else _store(folder, name, compute(), with_arrays)


def resume_steps(folder: str, name: str, compute: Callable[[], Generator], *,
                 with_arrays: bool = False) -> Generator:
  """`resume` of a phase whose compute is a generator function of train calls (`train.driven`):
  ``out = yield from common.resume_steps(folder, name, compute)``."""
  done = _finished(folder, name, with_arrays)
  return done if done is not None else _store(folder, name, (yield from compute()), with_arrays)


def _finished(folder: str, name: str, with_arrays: bool):
  """What `resume` returns for a finished phase; None when it has not finished."""
  done = results.read_json(folder, f"{name}.json")
  if not with_arrays:
    return done
  arrays = results.read_npz(folder, f"{name}.npz")
  return None if done is None or arrays is None else (done, arrays)


def _store(folder: str, name: str, value, with_arrays: bool):
  """Writes a phase's computed value (arrays first, the summary last) and returns it as read back."""
  summary, arrays = value if with_arrays else (value, None)
  if with_arrays:
    results.write_npz(folder, f"{name}.npz", arrays)
  done = jsonable(summary)
  results.write_json(folder, f"{name}.json", done)
  return (done, arrays) if with_arrays else done


def subdir(workdir: str, name: str, config) -> str:
  """workdir/name, created, holding `config` (checked like the workdir's own config)."""
  path = workdir_lib.ensure(os.path.join(workdir, name))
  workdir_lib.check_config(config, path)
  return path
