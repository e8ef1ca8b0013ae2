"""tensorflow_datasets sources: prepared folders, downloaded only when asked (`download=True`).

    from rl_align.data import tfds_source
    ds = tfds_source.tfds_dataset("cifar10", "train", data_dir="~/tensorflow_datasets")
    src = tfds_source.TfdsSource("cifar10", "train")     # record by record (ArrayRecord)
    src = tfds_source.TfdsSource("cifar10", "train", download=True)  # missing: tfds downloads it

Read with `tfds.data_source` (no TensorFlow needed) or `tfds.load` when TensorFlow is installed.
Without `download` nothing touches the network: a missing dataset is one DatasetNotFoundError
line with the fixes (the config field `data.download` among them).  With it, a missing dataset is
downloaded and prepared in data_dir as ArrayRecord by tfds (`download_and_prepare`, with tfds's
progress bars), in a temporary folder renamed into place when complete; a failure is one line.
"""

import contextlib
import glob
import importlib.util
import json
import numbers
import os
import re
import shutil
import socket
import threading
import urllib.parse
import urllib.request
import uuid
from typing import Optional

from absl import logging

import numpy as np

from rl_align import errors
from rl_align.data.core import ArrayDataset, Source, check_count, to_unit_float
from rl_align.data.resize import resize_images, square_resize

# tfds 'imagenet_resized/{s}x{s}' configs (Chrabaszcz et al. 2017 downsampled ILSVRC-2012).
IMAGENET_SIZES = (8, 16, 32, 64)


def resolve_data_dir(data_dir) -> str:
  if data_dir is None:
    data_dir = os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
  return os.path.expanduser(os.fspath(data_dir))


# The config field that turns downloading on (`rl_align.data.load(..., download=True)`).
DOWNLOAD_FLAG = "--config.data.download=True"
# Seconds the hosts of a dataset's URLs (or the proxy) get to accept a connection before a download
# starts: without a network the download fails within this, instead of after tfds's ten retries.
DOWNLOAD_TIMEOUT_S = 15.0
# Datasets whose files tfds cannot download (a registration is needed).
MANUAL = ("imagenet2012",)


def _manual_how(data_dir: str) -> str:
  return (
    "put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (register at "
    "image-net.org/download-images) in a folder DIR and run `tfds build imagenet2012 "
    f"--manual_dir=DIR --data_dir={data_dir} --file_format=array_record`"
  )


def _not_found(name: str, data_dir: str) -> errors.DatasetNotFoundError:
  if name.split("/")[0] in MANUAL:
    how = _manual_how(data_dir)
  else:
    how = (
      f"where there is a network, rerun with {DOWNLOAD_FLAG} (or call data.load(..., "
      f"download=True)): tfds downloads and prepares it in data_dir; or on a machine with "
      f"internet run `tfds build {name} --data_dir={data_dir} --file_format=array_record` "
      f"(plain `tfds build` writes tfrecord, which needs `pip install -e .[tf]` to read) and "
      "copy that folder here"
    )
  return errors.DatasetNotFoundError(
    f"tfds dataset {name!r} is not prepared in data_dir={data_dir!r} (nothing is downloaded "
    f"unless asked). Fix: {how}, or pass data_dir= / set TFDS_DATA_DIR to where it already is, "
    "or use an embedded source (gaussian, digits, photos)."
  )


def _bad_info(name: str, data_dir: str, e: Exception) -> errors.DataError:
  """A DataError naming the dataset_info.json of `name` in data_dir that is not valid JSON."""
  pattern = os.path.join(data_dir, *name.split("/"), "**", "dataset_info.json")
  where, why = os.path.join(data_dir, name, "<version>", "dataset_info.json"), str(e)
  for path in sorted(glob.glob(pattern, recursive=True)):
    try:
      with open(path, encoding="utf-8") as f:
        json.load(f)
    except (OSError, ValueError) as bad:
      where, why = path, f"{type(bad).__name__}: {bad}"
      break
  return errors.DataError(
    f"tfds dataset {name!r}: {where} is not valid JSON ({' '.join(why.split())[:160]}); the "
    f"folder holds an incomplete or damaged copy. Fix: delete the folder "
    f"{os.path.dirname(where)} and prepare it again (`tfds build {name} --data_dir={data_dir} "
    f"--file_format=array_record`, or {DOWNLOAD_FLAG})."
  )


@contextlib.contextmanager
def _one_line_info_errors(name: str, data_dir: str):
  """Turns tfds's raw protobuf ParseError of a damaged dataset_info.json into `_bad_info`."""
  from google.protobuf import json_format  # pylint: disable=g-import-not-at-top

  try:
    yield
  except json_format.ParseError as e:
    raise _bad_info(name, data_dir, e) from None


def _registered_builder(name: str, data_dir: str):
  """tfds.builder(name, data_dir) of a registered dataset, with our one-line errors."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    with _one_line_info_errors(name, data_dir):
      return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.ConfigError(
      f"{name!r} is not a tfds dataset name. Fix: use a name of data.SOURCES, "
      "or a name from `tfds.list_builders()`."
    ) from None


# What tfds needs to prepare an image dataset besides itself: TensorFlow (it encodes numpy images
# with it) and importlib_resources (it finds a builder's checksums file with it).  Neither is
# needed to read a prepared folder.
PREPARE_NEEDS = {
  "tensorflow": "`pip install -e .[tf]` (tensorflow-cpu)",
  "importlib_resources": "`pip install -e .[tf]` (importlib_resources)",
}


class _Missing(Exception):
  """The packages of PREPARE_NEEDS that are not installed (raised before anything downloads)."""


def make_builder(name: str, data_dir: str):
  """The tfds builder that downloads and prepares `name` into data_dir as ArrayRecord: the one
  place `download_and_prepare` gets its builder (tests stand another one in here).  Raises
  _Missing, before anything downloads, when a package of PREPARE_NEEDS is not installed."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  missing = [m for m in PREPARE_NEEDS if importlib.util.find_spec(m) is None]
  if missing:
    raise _Missing(*missing)
  return tfds.builder(name, data_dir=data_dir, file_format="array_record")


def _probe_hosts(urls, timeout_s: float) -> str | None:
  """None when the host of every URL (its proxy where one is set) accepts a TCP connection within
  timeout_s seconds in all; else why not.  Runs in a daemon thread, so a resolver that never
  answers cannot hold the caller past timeout_s."""
  proxies = urllib.request.getproxies()
  targets = []
  for url in urls:
    u = urllib.parse.urlsplit(url)
    proxy = proxies.get(u.scheme)
    if proxy and not urllib.request.proxy_bypass(u.hostname or ""):
      u = urllib.parse.urlsplit(proxy if "//" in proxy else f"http://{proxy}")
    port = u.port or (443 if u.scheme == "https" else 80)
    if u.hostname and (u.hostname, port) not in targets:
      targets.append((u.hostname, port))
  result = {}

  def probe():
    for host, port in targets:
      try:
        socket.create_connection((host, port), timeout=timeout_s).close()
      except OSError as e:
        result["why"] = f"{host}:{port} did not answer ({type(e).__name__}: {e})"
        return
    result["ok"] = True

  worker = threading.Thread(target=probe, daemon=True, name="rl_align-download-probe")
  worker.start()
  worker.join(timeout_s)
  if result.get("ok") or not targets:
    return None
  return result.get("why") or (
    f"{targets[0][0]}:{targets[0][1]} did not answer within {timeout_s:g} s"
  )


def _download_failed(name: str, data_dir: str, why: str) -> errors.DatasetNotFoundError:
  return errors.DatasetNotFoundError(
    f"tfds dataset {name!r} could not be downloaded into data_dir={data_dir!r}: "
    f"{' '.join(why.split())[:300]}. Fix: run where the network reaches the dataset's hosts "
    f"(a proxy: set HTTPS_PROXY), or on a machine with internet run `tfds build {name} "
    f"--data_dir={data_dir} --file_format=array_record` and copy that folder here (then "
    f"{DOWNLOAD_FLAG} is not needed)."
  )


def download_and_prepare(name: str, data_dir, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> str:
  """Downloads tfds dataset `name` and prepares it in data_dir as ArrayRecord (what `TfdsSource`
  reads), with tfds's own progress bars; returns the prepared folder::

      tfds_source.download_and_prepare("cifar10", "~/tensorflow_datasets")

  The dataset is prepared in a temporary folder inside data_dir and renamed into place only once
  complete, so a failure (or a killed process) never leaves a dataset folder that a later run
  reads; the downloaded archives stay in data_dir/downloads, where tfds finds them again.  Before
  anything is written, the hosts of the dataset's URLs (or the proxy) must accept a connection
  within timeout_s seconds: without a network this fails in about that time, not after tfds's
  retries.  Any failure is one DatasetNotFoundError line naming the dataset and the fix.
  """
  data_dir = resolve_data_dir(data_dir)
  if name.split("/")[0] in MANUAL:
    raise errors.DatasetNotFoundError(
      f"tfds dataset {name!r} cannot be downloaded (its files need a registration). Fix: "
      f"{_manual_how(data_dir)}."
    )
  tmp = os.path.join(data_dir, f".rl_align_download_{name.replace('/', '_')}_{uuid.uuid4().hex}")
  try:
    builder = make_builder(name, tmp)
    why = _probe_hosts(sorted(getattr(builder, "url_infos", None) or ()), timeout_s)
    if why is not None:
      raise _download_failed(name, data_dir, why)
    logging.info("downloading tfds dataset %r and preparing it in %s (ArrayRecord)", name, data_dir)
    builder.download_and_prepare(
      download_dir=os.path.join(data_dir, "downloads"), file_format="array_record"
    )
    rel = os.path.relpath(os.fspath(builder.data_dir), tmp)
    final = os.path.join(data_dir, rel)
    if not os.path.isfile(os.path.join(tmp, rel, "dataset_info.json")):
      raise _download_failed(name, data_dir, f"tfds left no dataset_info.json in {rel}")
    if os.path.isdir(final) and not os.path.isfile(os.path.join(final, "dataset_info.json")):
      shutil.rmtree(final)  # an incomplete copy no reader accepts: replaced
    if not os.path.isdir(final):  # (a complete one, prepared meanwhile by another run, stays)
      os.makedirs(os.path.dirname(final), exist_ok=True)
      os.rename(os.path.join(tmp, rel), final)
    return final
  except errors.RLAlignError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # network, disk, a broken archive, ...
    missing = (
      list(e.args) if isinstance(e, _Missing) else re.findall(r"No module named '(\w+)", str(e))[:1]
    )
    if missing:
      fixes = [PREPARE_NEEDS.get(m, f"`pip install {m}`") for m in missing]
      raise errors.DatasetNotFoundError(
        f"tfds dataset {name!r} is not prepared in data_dir={data_dir!r}, and tfds cannot "
        f"prepare it in this environment: it needs {' and '.join(missing)}. Fix: "
        f"{' and '.join(fixes)}, then rerun; or on a machine that has them run `tfds build "
        f"{name} --data_dir={data_dir} --file_format=array_record` and copy that folder "
        "here."
      ) from None
    raise _download_failed(name, data_dir, f"{type(e).__name__}: {e}") from e
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def ensure_prepared(name: str, data_dir, download: bool = False) -> None:
  """Nothing when tfds dataset `name` is prepared in data_dir (or when not `download`: the reader
  then says it is missing); else `download_and_prepare` it there."""
  data_dir = resolve_data_dir(data_dir)
  if download and not _registered_builder(name, data_dir).is_prepared():
    download_and_prepare(name, data_dir)


def _open_tfds(name: str, split: str, data_dir: str, download: bool = False):
  """tfds.data_source(name, split) (ArrayRecord, no TensorFlow), with our one-line errors;
  `download`: a missing dataset is downloaded and prepared first (`ensure_prepared`)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  ensure_prepared(name, data_dir, download)
  try:
    with _one_line_info_errors(name, data_dir):
      source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.ConfigError(
      f"{name!r} is not a tfds dataset name. Fix: use a name of data.SOURCES, "
      "or a name from `tfds.list_builders()`."
    ) from None
  except errors.RLAlignError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    builder = _registered_builder(name, data_dir)
    if not builder.is_prepared():
      raise _not_found(name, data_dir) from e
    if isinstance(e, NotImplementedError):
      raise errors.DataError(
        f"tfds dataset {name!r} in {data_dir!r} is stored as {builder.info.file_format}, which "
        "needs TensorFlow to read. Fix: `pip install -e .[tf]` (data.load only; the host input "
        f"pipeline needs ArrayRecord), or rebuild it with `tfds build {name} "
        "--file_format=array_record`."
      ) from e
    if isinstance(e, ValueError) and "split" in str(e).lower():
      raise errors.ConfigError(
        f"tfds dataset {name!r} has no split {split!r}. Fix: use one of "
        f"{sorted(builder.info.splits)}."
      ) from e
    raise
  _check_features(name, source.dataset_info.features.keys())
  return source


def _load_with_tf(
  name: str, split: str, data_dir: str, max_examples: Optional[int], download: bool = False
):
  """(images uint8 [N, H, W, C], labels, num_classes) through tfds.load (TensorFlow installed)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if max_examples is not None and "[" not in split:
    split = f"{split}[:{max_examples}]"
  ensure_prepared(name, data_dir, download)
  builder = _registered_builder(name, data_dir)
  try:
    with _one_line_info_errors(name, data_dir):
      arrays = tfds.as_numpy(
        tfds.load(name, split=split, data_dir=data_dir, batch_size=-1, download=False)
      )
  except errors.RLAlignError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if not _registered_builder(name, data_dir).is_prepared():
      raise _not_found(name, data_dir) from e
    raise
  _check_features(name, arrays.keys())
  return arrays["image"], arrays["label"], builder.info.features["label"].num_classes


def _check_features(name: str, keys) -> None:
  if "image" not in keys or "label" not in keys:
    raise errors.DataError(
      f"tfds dataset {name!r} has features {sorted(keys)}, not 'image' and 'label'. "
      "Fix: use an image classification dataset."
    )


def tfds_dataset(
  name: str,
  split: str,
  *,
  data_dir=None,
  image_size=None,
  max_examples: Optional[int] = None,
  download: bool = False,
) -> ArrayDataset:
  """A prepared tfds image classification dataset as float32 [N, H, W, C] in [0, 1].

  Reads with `tfds.load(batch_size=-1)` when TensorFlow is importable, else through
  `TfdsSource` (`tfds.data_source`, ArrayRecord), so the rows equal the streaming source's.
  data_dir defaults to $TFDS_DATA_DIR, then ~/tensorflow_datasets. Grayscale keeps C=1.
  `image_size` resizes (see `resize_images`; variable-size datasets such as imagenet2012 need it);
  `max_examples` keeps the first examples. Raises DatasetNotFoundError (with the fix) when the
  dataset is not prepared there, unless `download`: then tfds downloads and prepares it there
  first (`download_and_prepare`).
  """
  if max_examples is not None:
    check_count("tfds_dataset: max_examples", max_examples)
  data_dir = resolve_data_dir(data_dir)
  if importlib.util.find_spec("tensorflow") is not None:
    images, labels, num_classes = _load_with_tf(name, split, data_dir, max_examples, download)
    if max_examples is not None:
      images, labels = images[:max_examples], labels[:max_examples]
    if images.ndim == 3:
      images = images[..., None]
    x = to_unit_float(images) if image_size is None else resize_images(images, image_size)
    return ArrayDataset(x, labels.astype(np.int32), num_classes, f"{name}:{split}")
  src = TfdsSource(name, split, data_dir=data_dir, image_size=image_size, download=download)
  n = len(src) if max_examples is None else min(len(src), max_examples)
  if n == 0:
    raise errors.DataError(
      f"the tfds split {name}:{split} is empty. Fix: choose a non-empty split."
    )
  x = np.empty((n,) + src.example_shape, np.float32)
  y = np.empty((n,), np.int32)
  for s in range(0, n, 1024):
    xs, ys = src.take(np.arange(s, min(n, s + 1024)))
    x[s : s + len(ys)], y[s : s + len(ys)] = to_unit_float(xs), ys
  return ArrayDataset(x, y, src.num_classes, src.name)


def imagenet_name(image_size) -> str:
  if image_size not in IMAGENET_SIZES:
    raise errors.ConfigError(
      f"imagenet: image_size={image_size!r} has no tfds imagenet_resized config. "
      f"Fix: use one of {IMAGENET_SIZES}, or source 'imagenet2012' (any size, resized from the "
      "full images)."
    )
  return f"imagenet_resized/{image_size}x{image_size}"


def check_image_size(source: str, image_size) -> None:
  if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 1:
    raise errors.ConfigError(
      f"{source}: image_size must be an integer >= 1 (the side of the square images), got "
      f"{image_size!r}. Fix: e.g. image_size=64."
    )


class TfdsSource(Source):
  """A prepared tfds image dataset read record by record with `tfds.data_source` (ArrayRecord).

  Fixed-size images come as uint8, or float32 when `image_size` resizes them (`resize_images`);
  variable-size ones (imagenet2012) need `image_size`: the central square of each image,
  area-resized with PIL's box filter, uint8.  Never reads more than the records asked for.
  `download`: a dataset missing from data_dir is downloaded and prepared there first.
  """

  decodes = True

  def __init__(
    self, name: str, split: str = "train", *, data_dir=None, image_size=None, download: bool = False
  ):
    self.data_dir = resolve_data_dir(data_dir)
    self._src = _open_tfds(name, split, self.data_dir, download)
    features = self._src.dataset_info.features
    shape = tuple(features["image"].shape)
    if len(shape) == 2:
      shape += (1,)
    self.variable = shape[0] is None or shape[1] is None
    if image_size is not None:
      check_image_size(name, image_size)
    elif self.variable:
      raise errors.ConfigError(
        f"tfds dataset {name!r} has images of varying size. Fix: pass image_size= (e.g. 64): "
        "each image's central square is resized to it."
      )
    self.image_size = image_size
    side = image_size if image_size is not None else None
    self.example_shape = (side, side, shape[2]) if side else shape
    resized = side is not None and (side, side) != shape[:2]
    self.dtype = np.dtype(np.float32 if resized and not self.variable else np.uint8)
    self.name, self.num_classes = f"{name}:{split}", features["label"].num_classes

  def __len__(self) -> int:
    return len(self._src)

  def _records(self, idx):
    keys = [int(i) for i in idx]
    try:
      return self._src.__getitems__(keys)
    except (TypeError, AttributeError, NotImplementedError):  # e.g. tfds mock sources
      return [self._src[k] for k in keys]

  def _take(self, idx):
    recs = self._records(idx)
    labels = np.asarray([r["label"] for r in recs], np.int32)
    ims = [np.asarray(r["image"]) for r in recs]
    ims = [im[..., None] if im.ndim == 2 else im for im in ims]
    if self.variable:
      x = (
        np.stack([square_resize(im, self.image_size) for im in ims])
        if ims
        else np.zeros((0,) + self.example_shape, np.uint8)
      )
      return x, labels
    x = np.stack(ims) if ims else np.zeros((0,) + self.example_shape[:2] + (1,), np.uint8)
    if self.dtype == np.float32:
      x = resize_images(x, self.image_size)
    return x, labels
