"""One registry of data sources, used by both `load` (arrays in memory) and `source` (streaming).

    from rl_align import data
    ds = data.load("fashion_mnist", split="train")         # ArrayDataset, x float32 in [0, 1]
    src = data.source("fashion_mnist", split="train")      # the same rows, taken on demand
    data.split_kwargs("digits", "test", data_dir=None)     # {} : digits takes neither argument
    ds = data.load("cifar10", download=True)    # missing from data_dir: tfds downloads it first

Each entry names a loader (keyword arguments -> ArrayDataset), a streaming constructor with the
same keyword arguments (-> Source whose take(i) is the loader's row i), and where the data come
from (`embedded`: offline, synthesized or shipped with a package; `real`: a real dataset read from
disk, downloaded only with `download=True`, which every source accepts: config.data.download).
"""

import dataclasses
import inspect
import os
from typing import Callable

from absl import logging
import numpy as np

from rl_align import errors
from rl_align.data import embedded
from rl_align.data import idx
from rl_align.data import tfds_source
from rl_align.data.core import ArrayDataset, ArraySource, Source, check_count, to_unit_float
from rl_align.data.resize import resize_images


@dataclasses.dataclass(frozen=True)
class Entry:
  load: Callable[..., ArrayDataset]
  source: Callable[..., Source]
  origin: str  # "embedded" or "real"


def _subset_first(src: Source, name: str, max_examples) -> Source:
  if max_examples is None:
    return src
  check_count(f"{name}: max_examples", max_examples)
  return src.subset(np.arange(min(len(src), max_examples)))


def _materialize(src: Source) -> ArrayDataset:
  """A Source's rows as an ArrayDataset (float32 in [0, 1]), read in blocks."""
  n = len(src)
  if n == 0:
    raise errors.DataError(f"the split {src.name} is empty. Fix: choose a non-empty split.")
  x = np.empty((n,) + tuple(src.example_shape), np.float32)
  y = np.empty((n,), np.int32)
  for s in range(0, n, 1024):
    xs, ys = src.take(np.arange(s, min(n, s + 1024)))
    x[s : s + len(ys)], y[s : s + len(ys)] = to_unit_float(xs), ys
  return ArrayDataset(x, y, src.num_classes, src.name)


# ----------------------------------------------------------------------------------------------
# tfds datasets.


def _tfds_entry(tfds_name: str) -> Entry:
  def load_fn(
    split: str = "train", data_dir=None, image_size=None, max_examples=None, download=False
  ):
    return tfds_source.tfds_dataset(
      tfds_name,
      split,
      data_dir=data_dir,
      image_size=image_size,
      max_examples=max_examples,
      download=download,
    )

  def source_fn(
    split: str = "train", data_dir=None, image_size=None, max_examples=None, download=False
  ):
    src = tfds_source.TfdsSource(
      tfds_name, split, data_dir=data_dir, image_size=image_size, download=download
    )
    return _subset_first(src, tfds_name, max_examples)

  return Entry(load_fn, source_fn, "real")


def _imagenet_entry() -> Entry:
  """tfds imagenet_resized/{s}x{s} (image_size in IMAGENET_SIZES)."""

  def load_fn(
    split: str = "train", image_size: int = 32, data_dir=None, max_examples=None, download=False
  ):
    return tfds_source.tfds_dataset(
      tfds_source.imagenet_name(image_size),
      split,
      data_dir=data_dir,
      max_examples=max_examples,
      download=download,
    )

  def source_fn(
    split: str = "train", image_size: int = 32, data_dir=None, max_examples=None, download=False
  ):
    src = tfds_source.TfdsSource(
      tfds_source.imagenet_name(image_size), split, data_dir=data_dir, download=download
    )
    return _subset_first(src, "imagenet", max_examples)

  return Entry(load_fn, source_fn, "real")


def _imagenet2012_entry() -> Entry:
  """Full ILSVRC-2012: each image's central square, area-resized to image_size."""

  def load_fn(
    split: str = "train", image_size: int = 64, data_dir=None, max_examples=None, download=False
  ):
    tfds_source.check_image_size("imagenet2012", image_size)
    return tfds_source.tfds_dataset(
      "imagenet2012",
      split,
      data_dir=data_dir,
      image_size=image_size,
      max_examples=max_examples,
      download=download,
    )

  def source_fn(
    split: str = "train", image_size: int = 64, data_dir=None, max_examples=None, download=False
  ):
    tfds_source.check_image_size("imagenet2012", image_size)
    src = tfds_source.TfdsSource(
      "imagenet2012", split, data_dir=data_dir, image_size=image_size, download=download
    )
    return _subset_first(src, "imagenet2012", max_examples)

  return Entry(load_fn, source_fn, "real")


# ----------------------------------------------------------------------------------------------
# MNIST-format datasets: idx files in data_dir, a prepared tfds folder, or the Debian package.


def _idx_source(name: str, folder: str, split: str, image_size) -> Source:
  x, y = idx.read_split(folder, split, idx.DATASETS[name])
  if image_size is not None:
    tfds_source.check_image_size(name, image_size)
    x = resize_images(x, image_size)
  return ArraySource(x, y, idx.DATASETS[name], f"{name}:{split}")


# What this process read: one entry per (dataset, split, place), in order; the binaries copy the
# entries of a run into its run.json (`data_read`).
READ: list[dict] = []


def note_read(name: str, split: str, where: str, why: str = "", loud: bool = False) -> None:
  """Records (and logs) that `name`'s `split` was read from `where`; `why`: a fallback's reason,
  logged as a warning when `loud` (the user named another place)."""
  entry = {"dataset": name, "split": split, "from": where}
  if why:
    entry["why"] = why
  if entry not in READ:
    READ.append(entry)
    log = logging.warning if loud else logging.info
    log("%s:%s read from %s%s", name, split, where, f" ({why})" if why else "")


def resolve_idx(name: str, split: str, data_dir, image_size, download: bool = False) -> Source:
  """`name`'s split from the first place that has it (see `rl_align.data.idx`), as a Source;
  found nowhere and `download`: tfds downloads and prepares `name` in data_dir first.  Where it was
  read from (and why, when not from data_dir) is logged and kept in `READ`."""
  given = data_dir
  data_dir = tfds_source.resolve_data_dir(data_dir)
  folder = idx.find_folder(data_dir, name)
  if folder is not None:
    note_read(name, split, folder)
    return _idx_source(name, folder, split, image_size)
  if os.path.isdir(os.path.join(data_dir, name)):  # a prepared tfds folder, or a failed build
    try:
      src = tfds_source.TfdsSource(name, split, data_dir=data_dir, image_size=image_size)
      note_read(name, split, os.path.join(data_dir, name))
      return src
    except errors.DatasetNotFoundError:
      pass  # not prepared there: look further
  deb = idx.debian_folder(name)
  if deb is not None:
    state = (
      "has no idx files or prepared tfds folder" if os.path.isdir(data_dir) else "does not exist"
    )
    note_read(
      name,
      split,
      deb,
      f"data_dir {data_dir} {state}: the Debian package's copy was read instead",
      loud=bool(given),
    )
    return _idx_source(name, deb, split, image_size)
  if download:
    return tfds_source.TfdsSource(
      name, split, data_dir=data_dir, image_size=image_size, download=True
    )
  looked = [f"{data_dir} (idx files or a prepared tfds {name})"]
  if name in idx.DEBIAN:
    looked.append(f"{idx.DEBIAN[name][1]} (Debian package {idx.DEBIAN[name][0]})")
  raise errors.DatasetNotFoundError(
    f"{idx.how_to_get(name, looked)[:-1]}; or rerun with {tfds_source.DOWNLOAD_FLAG} where "
    "there is a network (tfds downloads and prepares it in data_dir)."
  )


def _idx_entry(name: str) -> Entry:
  def source_fn(
    split: str = "train", data_dir=None, image_size=None, max_examples=None, download=False
  ):
    return _subset_first(
      resolve_idx(name, split, data_dir, image_size, download), name, max_examples
    )

  def load_fn(
    split: str = "train", data_dir=None, image_size=None, max_examples=None, download=False
  ):
    return _materialize(source_fn(split, data_dir, image_size, max_examples, download))

  return Entry(load_fn, source_fn, "real")


def _embedded_entry(fn, streaming=None) -> Entry:
  source_fn = streaming or (lambda **kw: ArraySource.of(fn(**kw)))
  return Entry(fn, source_fn, "embedded")


REGISTRY = {
  "gaussian": _embedded_entry(embedded.gaussian),
  "digits": _embedded_entry(embedded.digits),
  "photos": _embedded_entry(embedded.photos, embedded.PhotoSource),
  "fashion_mnist": _idx_entry("fashion_mnist"),
  "mnist": _idx_entry("mnist"),
  "cifar10": _tfds_entry("cifar10"),
  "cifar100": _tfds_entry("cifar100"),
  "svhn_cropped": _tfds_entry("svhn_cropped"),
  "imagenet": _imagenet_entry(),
  "imagenet2012": _imagenet2012_entry(),
}
SOURCES = tuple(REGISTRY)
EMBEDDED = tuple(k for k, e in REGISTRY.items() if e.origin == "embedded")
REAL = tuple(k for k, e in REGISTRY.items() if e.origin == "real")


def _entry(name: str) -> Entry:
  if name not in REGISTRY:
    raise errors.ConfigError(f"unknown data source {name!r}. Fix: use one of {', '.join(SOURCES)}.")
  return REGISTRY[name]


def _without_download(name: str, entry: Entry, kwargs) -> dict:
  """kwargs with `download` checked (a bool) and dropped for an embedded source (nothing to
  download): every source accepts it, so one config field serves every config."""
  kwargs = dict(kwargs)
  if "download" in kwargs:
    if not isinstance(kwargs["download"], (bool, np.bool_)):
      raise errors.ConfigError(
        f"data source {name!r}: download must be True or False, got "
        f"{kwargs['download']!r}. Fix: --config.data.download=True."
      )
    if entry.origin == "embedded":
      kwargs.pop("download")
  return kwargs


def _bind(name: str, fn, kwargs) -> None:
  try:
    inspect.signature(fn).bind(**kwargs)
  except TypeError as e:
    accepted = ", ".join(inspect.signature(fn).parameters)
    raise errors.ConfigError(
      f"data source {name!r}: {e}. Fix: pass only its keyword arguments: {accepted}."
    ) from None


def load(name: str, **kwargs) -> ArrayDataset:
  """Loads source `name` (one of SOURCES) into memory with that source's keyword arguments.

  gaussian(n, stds|variances, rotate, seed, num_classes, split); digits(seed);
  photos(n, size, split, seed, num_classes, short_side, cell);
  fashion_mnist / mnist(split, data_dir, image_size, max_examples): idx files or tfds, see
  `rl_align.data.idx`; cifar10 / cifar100 / svhn_cropped(split, data_dir, image_size,
  max_examples); imagenet(split, image_size in IMAGENET_SIZES (tfds imagenet_resized), data_dir,
  max_examples); imagenet2012(split, image_size (central square, area-resized), data_dir,
  max_examples).  Every source also takes `download` (default False): a real dataset missing
  from data_dir is then downloaded and prepared there by tfds (`tfds_source.download_and_prepare`;
  Fashion-MNIST / MNIST only when no idx files, tfds folder or Debian copy is found); embedded
  sources ignore it.  `source` streams the same rows without loading them.
  """
  entry = _entry(name)
  kwargs = _without_download(name, entry, kwargs)
  _bind(name, entry.load, kwargs)
  return entry.load(**kwargs)


def source(name: str, **kwargs) -> Source:
  """A streaming Source of `name` with `load`'s keyword arguments; take(i) gives load's row i.

  photos render crops when taken; tfds sources read records when taken; gaussian, digits and the
  idx datasets are small and live in memory.
  """
  entry = _entry(name)
  kwargs = _without_download(name, entry, kwargs)
  _bind(name, entry.load, kwargs)
  return entry.source(**kwargs)


def split_kwargs(name: str, split: str, data_dir=None) -> dict:
  """The `split` / `data_dir` keyword arguments that source `name` takes (digits: neither,
  gaussian / photos: split only, real datasets: both)."""
  params = inspect.signature(_entry(name).load).parameters
  out = {}
  if "split" in params:
    out["split"] = split
  if "data_dir" in params:
    out["data_dir"] = data_dir or None
  return out
