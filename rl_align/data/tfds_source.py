"""tensorflow_datasets sources (prepared folders only; we never download).

    from rl_align.data import tfds_source
    ds = tfds_source.tfds_dataset("cifar10", "train", data_dir="~/tensorflow_datasets")
    src = tfds_source.TfdsSource("cifar10", "train")     # record by record (ArrayRecord)

Read with `tfds.data_source` (no TensorFlow needed) or `tfds.load` when TensorFlow is installed.
"""
import importlib.util
import numbers
import os
from typing import Optional

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


def _not_found(name: str, data_dir: str) -> errors.DatasetNotFoundError:
  if name.split("/")[0] == "imagenet2012":
    how = ("put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (register at "
           "image-net.org/download-images) in a folder DIR and run `tfds build imagenet2012 "
           f"--manual_dir=DIR --data_dir={data_dir} --file_format=array_record`")
  else:
    how = (f"on a machine with internet run `tfds build {name} --data_dir={data_dir} "
           f"--file_format=array_record` (plain `tfds build` writes tfrecord, which needs "
           f"`pip install -e .[tf]` to read) and copy that folder here")
  return errors.DatasetNotFoundError(
      f"tfds dataset {name!r} is not prepared in data_dir={data_dir!r} (we never download). Fix: "
      f"{how}, or pass data_dir= / set TFDS_DATA_DIR to where it already is, or use an embedded "
      "source (gaussian, digits, photos).")


def _open_tfds(name: str, split: str, data_dir: str):
  """tfds.data_source(name, split) (ArrayRecord, no TensorFlow), with our one-line errors."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.ConfigError(
        f"{name!r} is not a tfds dataset name. Fix: use a name of data.SOURCES, "
        "or a name from `tfds.list_builders()`.") from None
  except Exception as e:  # pylint: disable=broad-except
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      raise _not_found(name, data_dir) from e
    if isinstance(e, NotImplementedError):
      raise errors.DataError(
          f"tfds dataset {name!r} in {data_dir!r} is stored as {builder.info.file_format}, which "
          "needs TensorFlow to read. Fix: `pip install -e .[tf]` (data.load only; the host input "
          f"pipeline needs ArrayRecord), or rebuild it with `tfds build {name} "
          "--file_format=array_record`.") from e
    if isinstance(e, ValueError) and "split" in str(e).lower():
      raise errors.ConfigError(
          f"tfds dataset {name!r} has no split {split!r}. Fix: use one of "
          f"{sorted(builder.info.splits)}.") from e
    raise
  _check_features(name, source.dataset_info.features.keys())
  return source


def _load_with_tf(name: str, split: str, data_dir: str, max_examples: Optional[int]):
  """(images uint8 [N, H, W, C], labels, num_classes) through tfds.load (TensorFlow installed)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if max_examples is not None and "[" not in split:
    split = f"{split}[:{max_examples}]"
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    arrays = tfds.as_numpy(tfds.load(name, split=split, data_dir=data_dir, batch_size=-1,
                                     download=False))
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.ConfigError(
        f"{name!r} is not a tfds dataset name. Fix: use a name of data.SOURCES, "
        "or a name from `tfds.list_builders()`.") from None
  except Exception as e:  # pylint: disable=broad-except
    if not tfds.builder(name, data_dir=data_dir).is_prepared():
      raise _not_found(name, data_dir) from e
    raise
  _check_features(name, arrays.keys())
  return arrays["image"], arrays["label"], builder.info.features["label"].num_classes


def _check_features(name: str, keys) -> None:
  if "image" not in keys or "label" not in keys:
    raise errors.DataError(
        f"tfds dataset {name!r} has features {sorted(keys)}, not 'image' and 'label'. "
        "Fix: use an image classification dataset.")


def tfds_dataset(name: str, split: str, *, data_dir=None, image_size=None,
                 max_examples: Optional[int] = None) -> ArrayDataset:
  """A prepared tfds image classification dataset as float32 [N, H, W, C] in [0, 1].

  Reads with `tfds.load(batch_size=-1)` when TensorFlow is importable, else through
  `TfdsSource` (`tfds.data_source`, ArrayRecord), so the rows equal the streaming source's.
  data_dir defaults to $TFDS_DATA_DIR, then ~/tensorflow_datasets. Grayscale keeps C=1.
  `image_size` resizes (see `resize_images`; variable-size datasets such as imagenet2012 need it);
  `max_examples` keeps the first examples. Raises DatasetNotFoundError (with the fix) when the
  dataset is not prepared there.
  """
  if max_examples is not None:
    check_count("tfds_dataset: max_examples", max_examples)
  data_dir = resolve_data_dir(data_dir)
  if importlib.util.find_spec("tensorflow") is not None:
    images, labels, num_classes = _load_with_tf(name, split, data_dir, max_examples)
    if max_examples is not None:
      images, labels = images[:max_examples], labels[:max_examples]
    if images.ndim == 3:
      images = images[..., None]
    x = to_unit_float(images) if image_size is None else resize_images(images, image_size)
    return ArrayDataset(x, labels.astype(np.int32), num_classes, f"{name}:{split}")
  src = TfdsSource(name, split, data_dir=data_dir, image_size=image_size)
  n = len(src) if max_examples is None else min(len(src), max_examples)
  if n == 0:
    raise errors.DataError(f"the tfds split {name}:{split} is empty. Fix: choose a non-empty split.")
  x = np.empty((n,) + src.example_shape, np.float32)
  y = np.empty((n,), np.int32)
  for s in range(0, n, 1024):
    xs, ys = src.take(np.arange(s, min(n, s + 1024)))
    x[s:s + len(ys)], y[s:s + len(ys)] = to_unit_float(xs), ys
  return ArrayDataset(x, y, src.num_classes, src.name)


def imagenet_name(image_size) -> str:
  if image_size not in IMAGENET_SIZES:
    raise errors.ConfigError(
        f"imagenet: image_size={image_size!r} has no tfds imagenet_resized config. "
        f"Fix: use one of {IMAGENET_SIZES}, or source 'imagenet2012' (any size, resized from the "
        "full images).")
  return f"imagenet_resized/{image_size}x{image_size}"


def check_image_size(source: str, image_size) -> None:
  if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 1:
    raise errors.ConfigError(
        f"{source}: image_size must be an integer >= 1 (the side of the square images), got "
        f"{image_size!r}. Fix: e.g. image_size=64.")


class TfdsSource(Source):
  """A prepared tfds image dataset read record by record with `tfds.data_source` (ArrayRecord).

  Fixed-size images come as uint8, or float32 when `image_size` resizes them (`resize_images`);
  variable-size ones (imagenet2012) need `image_size`: the central square of each image,
  area-resized with PIL's box filter, uint8.  Never reads more than the records asked for.
  """
  decodes = True

  def __init__(self, name: str, split: str = "train", *, data_dir=None, image_size=None):
    self.data_dir = resolve_data_dir(data_dir)
    self._src = _open_tfds(name, split, self.data_dir)
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
          "each image's central square is resized to it.")
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
      x = np.stack([square_resize(im, self.image_size) for im in ims]) if ims else np.zeros(
          (0,) + self.example_shape, np.uint8)
      return x, labels
    x = np.stack(ims) if ims else np.zeros((0,) + self.example_shape[:2] + (1,), np.uint8)
    if self.dtype == np.float32:
      x = resize_images(x, self.image_size)
    return x, labels
