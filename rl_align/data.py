"""Data sources, standardization, splits and random labels.

Every source returns an :class:`ArrayDataset` (numpy float32 inputs, int32 labels). Sources are
either EMBEDDED (work offline, ship with numpy / scikit-learn / scikit-image) or TFDS (read from a
prepared ``tensorflow_datasets`` folder; we never download)::

    from rl_align import data
    ds = data.load("gaussian", n=10_000, stds=[0.1 * i for i in range(1, 31)])
    ds = data.load("photos", n=20_000, split="train")        # 32x32 RGB crops of 10 real photos
    ds = data.load("cifar10", split="train", data_dir="~/tensorflow_datasets")

    idx = data.split_indices(len(ds), {"upstream": 20_000, "downstream": 25_000}, seed=0)
    up = ds.subset(idx["upstream"])
    up = up.with_labels(data.random_labels(jax.random.key(1), len(up), 10), num_classes=10)
    mean, std = data.channel_stats(up.x)                      # float64, streamed over chunks
    x = data.standardize(up.x, mean, std)                     # float32

``SOURCES`` lists every name ``load`` accepts; ``EMBEDDED`` and ``TFDS`` split them by origin.

Streaming sources (the host input pipeline, ``rl_align.pipeline``) read examples on demand instead
of loading a split into memory; ``take`` gives exactly the rows ``load`` would::

    src = data.source("imagenet", split="train", image_size=64)    # tfds imagenet_resized/64x64
    src = data.source("imagenet2012", split="train", image_size=96)  # full ILSVRC-2012, resized
    len(src), src.example_shape, src.num_classes
    x, y = src.take([5, 2, 9])           # uint8 (or float32 when resized) [3, H, W, C], int32 [3]
    up = src.subset(idx["upstream"])     # a view, nothing read
    mean, std = data.channel_stats(up)   # streamed over chunks, same numbers as on the array
    data.choose_placement(len(up), up.example_shape, num_seeds=8, device_bytes=80 << 30)
"""
import dataclasses
import functools
import importlib.util
import inspect
import numbers
import os
from typing import Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from rl_align import errors

EMBEDDED = ("gaussian", "digits", "photos")
TFDS = ("cifar10", "cifar100", "mnist", "fashion_mnist", "svhn_cropped", "imagenet",
        "imagenet2012")
SOURCES = EMBEDDED + TFDS

# tfds 'imagenet_resized/{s}x{s}' configs (Chrabaszcz et al. 2017 downsampled ILSVRC-2012).
IMAGENET_SIZES = (8, 16, 32, 64)
# Data placements of the engine (`choose_placement`): the training set on the device, or fed from
# the host input pipeline; "auto" picks.
PLACEMENTS = ("auto", "device", "host")
# "auto" keeps the training set on the device while it (plus the per-seed labels) needs less than
# this fraction of one device's memory.
DEVICE_FRACTION = 0.25

# Offline natural colour photos; the label of a `photos` crop is its index in this tuple.
# skimage.data.cat is the same image as chelsea; colorwheel and logo are synthetic; the grayscale
# photos (camera, coins, ...) would be separable by colour alone, so none of them is used.
PHOTO_NAMES = ("china", "flower", "astronaut", "chelsea", "coffee", "rocket", "motorcycle",
               "immunohistochemistry", "hubble_deep_field", "retina")
PHOTO_SPLITS = ("train", "val", "test")
GAUSSIAN_SPLITS = PHOTO_SPLITS

_CHUNK_BYTES = 64 << 20  # streamed reductions touch at most this many float64 bytes at once


# ----------------------------------------------------------------------------------------------
# Container.


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
  """In-memory dataset: x float32 [N, d] or [N, H, W, C]; y int32 [N] in [0, num_classes)."""
  x: np.ndarray
  y: np.ndarray
  num_classes: int
  name: str

  def __post_init__(self):
    x = np.asarray(self.x)
    y = np.asarray(self.y)
    if x.ndim < 2:
      raise errors.DataError(
          f"dataset {self.name!r}: x must be [N, d] or [N, H, W, C], got shape {x.shape}. "
          "Fix: add a feature axis, e.g. x[:, None].")
    if y.ndim != 1 or len(y) != len(x):
      raise errors.DataError(
          f"dataset {self.name!r}: y must be [N] with N = len(x) = {len(x)}, got shape {y.shape}. "
          "Fix: pass one integer label per example.")
    if not np.issubdtype(y.dtype, np.integer):
      raise errors.DataError(
          f"dataset {self.name!r}: labels must be integers, got dtype {y.dtype}. "
          "Fix: convert class ids with y.astype(np.int32).")
    if not isinstance(self.num_classes, numbers.Integral) or self.num_classes < 1:
      raise errors.ConfigError(
          f"dataset {self.name!r}: num_classes must be an integer >= 1, got {self.num_classes!r}. "
          "Fix: pass the number of classes K.")
    if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
      raise errors.DataError(
          f"dataset {self.name!r}: labels span [{y.min()}, {y.max()}] but num_classes is "
          f"{self.num_classes}. Fix: labels must lie in [0, num_classes); raise num_classes.")
    object.__setattr__(self, "x", x.astype(np.float32, copy=False))
    object.__setattr__(self, "y", y.astype(np.int32, copy=False))
    object.__setattr__(self, "num_classes", int(self.num_classes))

  def __len__(self) -> int:
    return len(self.y)

  def __repr__(self) -> str:
    return (f"ArrayDataset(name={self.name!r}, x={self.x.shape} {self.x.dtype}, "
            f"y={self.y.shape} {self.y.dtype}, num_classes={self.num_classes})")

  def subset(self, idx) -> "ArrayDataset":
    """The examples at `idx` (integer indices, a slice or a boolean mask)."""
    return ArrayDataset(self.x[idx], self.y[idx], self.num_classes, self.name)

  def with_labels(self, y, num_classes: int) -> "ArrayDataset":
    """Same inputs (not copied) with new labels, e.g. random ones."""
    return ArrayDataset(self.x, y, num_classes, self.name)


# ----------------------------------------------------------------------------------------------
# Synthetic Gaussian data (Fig. 4 left / Fig. 20).


def _variances(stds, variances) -> np.ndarray:
  if (stds is None) == (variances is None):
    raise errors.ConfigError(
        "gaussian: pass exactly one of stds= or variances=. Fix: e.g. stds=[0.1, 0.2, ..., 3.0] "
        "(Fig. 20's diag(0.1..3.0) read as standard deviations reproduces the paper's curves).")
  given, field = (stds, "stds") if stds is not None else (variances, "variances")
  v = np.asarray(given, dtype=np.float64)
  if v.ndim != 1 or v.size == 0:
    raise errors.ConfigError(
        f"gaussian: {field} must be a non-empty 1-D list, got shape {v.shape}. "
        f"Fix: pass one value per input dimension.")
  if not np.all(np.isfinite(v)) or np.any(v < 0):
    raise errors.ConfigError(
        f"gaussian: {field} must be finite and >= 0, got {v.tolist()}. Fix: correct {field}.")
  return v**2 if stds is not None else v


def _haar_orthogonal(d: int, seed: int) -> np.ndarray:
  """A Haar-distributed orthogonal d x d matrix from its own stream of `seed`."""
  g = np.random.default_rng([seed, 0]).standard_normal((d, d))
  q, r = np.linalg.qr(g)
  return q * np.sign(np.diag(r))  # sign fix makes the distribution exactly Haar


def gaussian_covariance(stds=None, variances=None, *, rotate: bool = False,
                        seed: int = 0) -> np.ndarray:
  """Population covariance (float64 [d, d]) of the data `gaussian(...)` samples.

  Σ = diag(stds**2) (or diag(variances)); with rotate=True, Σ = O Σ Oᵀ for a Haar-random orthogonal
  O drawn from `seed` (the same O that `gaussian` uses with the same seed).
  """
  var = _variances(stds, variances)
  if not rotate:
    return np.diag(var)
  o = _haar_orthogonal(var.size, seed)
  cov = (o * var) @ o.T
  return (cov + cov.T) / 2


def gaussian(n: int, *, stds=None, variances=None, rotate: bool = False, seed: int = 0,
             num_classes: int = 10, split: str = "train") -> ArrayDataset:
  """n samples x ~ N(0, Σ) with uniform random labels (there is no real task).

  Σ as in `gaussian_covariance` (exactly one of stds / variances); the rotation depends on `seed`
  only, so every split of one seed shares Σ. Samples and labels use independent streams of
  (seed, split), so 'train', 'val' and 'test' are independent draws from the same distribution.
  """
  var = _variances(stds, variances)
  _check_count("gaussian: n", n)
  _check_num_classes(num_classes)
  if split not in GAUSSIAN_SPLITS:
    raise errors.ConfigError(
        f"gaussian: unknown split {split!r}. Fix: use one of {GAUSSIAN_SPLITS}.")
  stream = GAUSSIAN_SPLITS.index(split)
  x = np.random.default_rng([seed, 1, stream]).standard_normal((n, var.size)) * np.sqrt(var)
  if rotate:
    x = x @ _haar_orthogonal(var.size, seed).T
  y = np.random.default_rng([seed, 2, stream]).integers(0, num_classes, n)
  return ArrayDataset(x.astype(np.float32), y.astype(np.int32), num_classes, f"gaussian:{split}")


# ----------------------------------------------------------------------------------------------
# Embedded real images.


def digits(*, seed: int = 0) -> ArrayDataset:
  """scikit-learn's 1797 handwritten digits: x [1797, 8, 8, 1] float32 in [0, 1], 10 real classes.

  Examples keep scikit-learn's fixed order; `seed` is accepted for API uniformity and unused
  (shuffle with `split_indices`).
  """
  del seed
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  bunch = load_digits()
  x = (bunch.images / 16.0).astype(np.float32)[..., None]
  return ArrayDataset(x, bunch.target.astype(np.int32), 10, "digits")


def _raw_photos() -> list:
  """The PHOTO_NAMES photos as uint8 [H, W, 3] arrays, all loaded from installed files."""
  from sklearn.datasets import load_sample_images  # pylint: disable=g-import-not-at-top
  import skimage.data  # pylint: disable=g-import-not-at-top
  china, flower = load_sample_images().images
  loaders = {"china": lambda: china, "flower": lambda: flower,
             "motorcycle": lambda: skimage.data.stereo_motorcycle()[0]}
  return [loaders[k]() if k in loaders else getattr(skimage.data, k)() for k in PHOTO_NAMES]


@functools.lru_cache(maxsize=4)
def _photo_stack(short_side: int) -> tuple:
  """Photos resized (anti-aliased) to short side `short_side`, zero-padded into one array.

  Returns (stack uint8 [P, H_max, W_max, 3] read-only, ((H, W) of each photo, ...)); cached.
  """
  import skimage.transform  # pylint: disable=g-import-not-at-top
  resized = []
  for im in _raw_photos():
    h, w = im.shape[:2]
    f = short_side / min(h, w)
    r = skimage.transform.resize(im, (round(h * f), round(w * f)), anti_aliasing=True)
    resized.append(np.round(r * 255).astype(np.uint8))
  hmax = max(r.shape[0] for r in resized)
  wmax = max(r.shape[1] for r in resized)
  stack = np.zeros((len(resized), hmax, wmax, 3), np.uint8)
  for i, r in enumerate(resized):
    stack[i, :r.shape[0], :r.shape[1]] = r
  stack.setflags(write=False)
  return stack, tuple(r.shape[:2] for r in resized)


def photo_cell_split(i, j) -> np.ndarray:
  """Fixed split rule of grid cell (row i, column j): 'train' 70%, 'val' 10%, 'test' 20%.

  r = (i + 3 j) mod 10; r in {0, 5} -> test, r == 7 -> val, else train. Spreads every split over
  the whole photo and never depends on a seed, so splits drawn with any seeds stay disjoint.
  """
  r = (np.asarray(i) + 3 * np.asarray(j)) % 10
  return np.where((r == 0) | (r == 5), "test", np.where(r == 7, "val", "train"))


def photo_crop_origins(n: int, *, size: int = 32, split: str = "train", seed: int = 0,
                       num_classes: int = 10, short_side: int = 256,
                       cell: int = 48) -> np.ndarray:
  """Where `photos` with the same arguments cuts its crops: int64 [n, 4] (photo, top, left, flip).

  Each resized photo is tiled into cell x cell squares; `photo_cell_split` assigns every square to
  one split. A crop lies entirely inside one square of its split (uniform square, uniform offset,
  flip with probability 1/2), so crops of different splits share no pixel. photo == label;
  labels are balanced (counts differ by at most one) and come in a seeded random order.
  """
  _check_count("photos: n", n)
  if split not in PHOTO_SPLITS:
    raise errors.ConfigError(
        f"photos: unknown split {split!r}. Fix: use one of {PHOTO_SPLITS}.")
  if not 1 <= num_classes <= len(PHOTO_NAMES):
    raise errors.ConfigError(
        f"photos: num_classes={num_classes} but only {len(PHOTO_NAMES)} offline photos exist "
        f"({', '.join(PHOTO_NAMES)}). Fix: use 1 <= num_classes <= {len(PHOTO_NAMES)}.")
  if not 1 <= size <= cell:
    raise errors.ConfigError(
        f"photos: crop size={size} must lie in [1, cell={cell}]. Fix: lower size or raise cell.")
  if cell > short_side:
    raise errors.ConfigError(
        f"photos: cell={cell} exceeds short_side={short_side}. Fix: raise short_side.")
  shapes = _photo_stack(short_side)[1]
  rng = np.random.default_rng([seed, PHOTO_SPLITS.index(split)])
  labels = rng.permutation(np.arange(n) % num_classes)
  out = np.zeros((n, 4), np.int64)
  out[:, 0] = labels
  for p in range(num_classes):
    rows, cols = shapes[p][0] // cell, shapes[p][1] // cell
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    mine = photo_cell_split(ii, jj) == split
    ci, cj = ii[mine], jj[mine]
    if ci.size == 0:
      raise errors.ConfigError(
          f"photos: photo {PHOTO_NAMES[p]!r} has no {split!r} cell with short_side={short_side}, "
          f"cell={cell}. Fix: raise short_side or lower cell.")
    sel = np.flatnonzero(labels == p)
    k = rng.integers(0, ci.size, sel.size)
    off = rng.integers(0, cell - size + 1, (sel.size, 2))
    out[sel, 1] = ci[k] * cell + off[:, 0]
    out[sel, 2] = cj[k] * cell + off[:, 1]
    out[sel, 3] = rng.integers(0, 2, sel.size)
  return out


def render_photo_crops(origins: np.ndarray, *, size: int = 32, short_side: int = 256,
                       raw: bool = False) -> np.ndarray:
  """The size x size RGB crops at `origins` (from `photo_crop_origins`): float32 in [0, 1], or
  the uint8 pixels with raw=True."""
  stack = _photo_stack(short_side)[0]
  windows = np.lib.stride_tricks.sliding_window_view(stack, (size, size), axis=(1, 2))
  p, top, left, flip = (origins[:, k] for k in range(4))
  crops = windows[p, top, left]                          # [N, 3, size, size] uint8, a copy
  flipped = flip == 1
  crops[flipped] = crops[flipped][..., ::-1]             # flipped crops read columns backwards
  crops = np.ascontiguousarray(crops.transpose(0, 2, 3, 1))
  return crops if raw else _to_unit_float(crops)


def photos(n: int, *, size: int = 32, split: str = "train", seed: int = 0,
           num_classes: int = 10, short_side: int = 256, cell: int = 48) -> ArrayDataset:
  """n RGB crops [n, size, size, 3] float32 in [0, 1] of real photos; label = which photo.

  Offline natural-image data with a learnable but not trivial task (sky, shadows and texture occur
  in several photos). Photos (PHOTO_NAMES: 2 from scikit-learn, 8 from scikit-image) are first
  resized so that their short side is `short_side` pixels (default 256: a 32x32 crop then holds an
  object part, e.g. an eye or a cup handle), then tiled into `cell`-pixel squares that
  `photo_cell_split` assigns to 'train' / 'val' / 'test', so splits never share a pixel (for equal
  short_side and cell, any size <= cell and any seeds). Deterministic given the arguments;
  `photo_crop_origins` gives each crop's position.
  """
  origins = photo_crop_origins(n, size=size, split=split, seed=seed, num_classes=num_classes,
                               short_side=short_side, cell=cell)
  x = render_photo_crops(origins, size=size, short_side=short_side)
  return ArrayDataset(x, origins[:, 0].astype(np.int32), num_classes, f"photos:{split}")


# ----------------------------------------------------------------------------------------------
# tensorflow_datasets (prepared folders only; never downloads).


def _resolve_data_dir(data_dir) -> str:
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
      f"source: {', '.join(EMBEDDED)}.")


def _open_tfds(name: str, split: str, data_dir: str):
  """tfds.data_source(name, split) (ArrayRecord, no TensorFlow), with our one-line errors."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.ConfigError(
        f"{name!r} is not a tfds dataset name. Fix: use one of {', '.join(TFDS)} via data.load, "
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
        f"{name!r} is not a tfds dataset name. Fix: use one of {', '.join(TFDS)} via data.load, "
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


def _to_unit_float(images: np.ndarray) -> np.ndarray:
  if images.dtype == np.uint8:
    return images.astype(np.float32) * np.float32(1 / 255)
  return images.astype(np.float32, copy=False)


_RESIZE_BLOCK = 64  # images per jitted resize call: a fixed shape, so each image's result is the
                    # same whichever batch it comes in (XLA's result depends on the batch shape)


@functools.partial(jax.jit, static_argnums=(1,))
def _resize_block(x, hw):
  out = jax.image.resize(x, (x.shape[0],) + hw + (x.shape[-1],), method="linear", antialias=True)
  return jnp.clip(out, 0.0, 1.0)


def resize_images(x: np.ndarray, image_size, chunk: int = 2048) -> np.ndarray:
  """Resizes [N, H, W, C] images to image_size (int or (h, w)) as float32; uint8 maps to [0, 1].

  Integer downscaling factors average each f x f block (area resize, exact); other sizes use
  jax.image.resize's anti-aliased bilinear filter.  Either way an image's result does not depend on
  the other images in `x` (the streaming sources resize any subset and must match).
  """
  h, w = (image_size, image_size) if isinstance(image_size, numbers.Integral) else image_size
  if h < 1 or w < 1:
    raise errors.ConfigError(f"image_size must be >= 1, got {image_size!r}. Fix: e.g. 32.")
  n, hin, win, c = x.shape
  if (hin, win) == (h, w):
    return _to_unit_float(x)
  out = np.empty((n, h, w, c), np.float32)
  blocks = hin % h == 0 and win % w == 0
  step = chunk if blocks else _RESIZE_BLOCK
  for s in range(0, n, step):
    part = _to_unit_float(x[s:s + step])
    if blocks:
      fh, fw = hin // h, win // w
      out[s:s + step] = part.reshape(len(part), h, fh, w, fw, c).mean(axis=(2, 4))
    else:
      k = len(part)
      pad = np.zeros((_RESIZE_BLOCK - k,) + part.shape[1:], np.float32)
      out[s:s + k] = np.asarray(_resize_block(np.concatenate([part, pad]), (h, w)))[:k]
  return out


def _square_resize(im: np.ndarray, size: int) -> np.ndarray:
  """The central square of one uint8 [H, W, C] image, area-resized (PIL box filter) to size x size."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  h, w = im.shape[:2]
  m = min(h, w)
  top, left = (h - m) // 2, (w - m) // 2
  sq = np.ascontiguousarray(im[top:top + m, left:left + m])
  if m == size:
    return sq
  pil = Image.fromarray(sq[..., 0] if sq.shape[-1] == 1 else sq)
  out = np.asarray(pil.resize((size, size), Image.Resampling.BOX))
  return out.reshape(size, size, im.shape[-1])


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
    _check_count("tfds_dataset: max_examples", max_examples)
  data_dir = _resolve_data_dir(data_dir)
  if importlib.util.find_spec("tensorflow") is not None:
    images, labels, num_classes = _load_with_tf(name, split, data_dir, max_examples)
    if max_examples is not None:
      images, labels = images[:max_examples], labels[:max_examples]
    if images.ndim == 3:
      images = images[..., None]
    x = _to_unit_float(images) if image_size is None else resize_images(images, image_size)
    return ArrayDataset(x, labels.astype(np.int32), num_classes, f"{name}:{split}")
  src = TfdsSource(name, split, data_dir=data_dir, image_size=image_size)
  n = len(src) if max_examples is None else min(len(src), max_examples)
  if n == 0:
    raise errors.DataError(f"the tfds split {name}:{split} is empty. Fix: choose a non-empty split.")
  x = np.empty((n,) + src.example_shape, np.float32)
  y = np.empty((n,), np.int32)
  for s in range(0, n, 1024):
    xs, ys = src.take(np.arange(s, min(n, s + 1024)))
    x[s:s + len(ys)], y[s:s + len(ys)] = _to_unit_float(xs), ys
  return ArrayDataset(x, y, src.num_classes, src.name)


def _tfds_loader(tfds_name: str):
  def load_fn(split: str = "train", data_dir=None, image_size=None, max_examples=None):
    return tfds_dataset(tfds_name, split, data_dir=data_dir, image_size=image_size,
                        max_examples=max_examples)
  return load_fn


def _imagenet_name(image_size) -> str:
  if image_size not in IMAGENET_SIZES:
    raise errors.ConfigError(
        f"imagenet: image_size={image_size!r} has no tfds imagenet_resized config. "
        f"Fix: use one of {IMAGENET_SIZES}, or source 'imagenet2012' (any size, resized from the "
        "full images).")
  return f"imagenet_resized/{image_size}x{image_size}"


def _check_image_size(source: str, image_size) -> None:
  if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 1:
    raise errors.ConfigError(
        f"{source}: image_size must be an integer >= 1 (the side of the square images), got "
        f"{image_size!r}. Fix: e.g. image_size=64.")


def _imagenet(split: str = "train", image_size: int = 32, data_dir=None, max_examples=None):
  return tfds_dataset(_imagenet_name(image_size), split, data_dir=data_dir,
                      max_examples=max_examples)


def _imagenet2012(split: str = "train", image_size: int = 64, data_dir=None, max_examples=None):
  _check_image_size("imagenet2012", image_size)
  return tfds_dataset("imagenet2012", split, data_dir=data_dir, image_size=image_size,
                      max_examples=max_examples)


_LOADERS = {
    "gaussian": gaussian,
    "digits": digits,
    "photos": photos,
    **{k: _tfds_loader(k) for k in TFDS if k not in ("imagenet", "imagenet2012")},
    "imagenet": _imagenet,
    "imagenet2012": _imagenet2012,
}


def _bind(name: str, fn, kwargs) -> None:
  try:
    inspect.signature(fn).bind(**kwargs)
  except TypeError as e:
    accepted = ", ".join(inspect.signature(fn).parameters)
    raise errors.ConfigError(
        f"data source {name!r}: {e}. Fix: pass only its keyword arguments: {accepted}.") from None


def load(name: str, **kwargs) -> ArrayDataset:
  """Loads source `name` (one of SOURCES) into memory with that source's keyword arguments.

  gaussian(n, stds|variances, rotate, seed, num_classes, split); digits(seed);
  photos(n, size, split, seed, num_classes, short_side, cell);
  cifar10 / cifar100 / mnist / fashion_mnist / svhn_cropped(split, data_dir, image_size,
  max_examples); imagenet(split, image_size in IMAGENET_SIZES (tfds imagenet_resized), data_dir,
  max_examples); imagenet2012(split, image_size (central square, area-resized), data_dir,
  max_examples).  `source` streams the same rows without loading them.
  """
  if name not in _LOADERS:
    raise errors.ConfigError(
        f"unknown data source {name!r}. Fix: use one of {', '.join(SOURCES)}.")
  fn = _LOADERS[name]
  _bind(name, fn, kwargs)
  return fn(**kwargs)


# ----------------------------------------------------------------------------------------------
# Streaming sources: random access to examples without loading a split (rl_align.pipeline).


class Source:
  """Random access to a dataset's examples.  Subclasses set `name`, `num_classes`,
  `example_shape` (of one example as `take` returns it) and `dtype` (uint8 or float32) and define
  `__len__` and `_take`.

  take(idx) -> (x [k, *example_shape] dtype, y [k] int32) for integer indices in [0, len);
  x is raw (uint8 in [0, 255] or float32 in [0, 1]): `pipeline` converts and standardizes it.
  `decodes` says that reading an example costs a decode (the pipeline then reads duplicates once).
  """
  name: str = "source"
  num_classes: int = 0
  example_shape: tuple = ()
  dtype = np.float32
  decodes = False

  def __len__(self) -> int:
    raise NotImplementedError

  def _take(self, idx: np.ndarray) -> tuple:
    raise NotImplementedError

  def take(self, idx) -> tuple:
    idx = np.asarray(idx).reshape(-1)
    n = len(self)
    if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < -n or idx.max() >= n):
      raise errors.DataError(
          f"source {self.name!r}: indices must be integers in [0, {n}), got "
          f"[{idx.min()}, {idx.max()}] ({idx.dtype}). Fix: index within the source's length.")
    return self._take(np.where(idx < 0, idx + n, idx).astype(np.int64))

  def __getitem__(self, i):
    x, y = self.take([i])
    return x[0], y[0]

  def subset(self, idx) -> "Source":
    """The examples at `idx` (integer indices), as a view: nothing is read."""
    return SubsetSource(self, idx)

  def __repr__(self) -> str:
    return (f"{type(self).__name__}(name={self.name!r}, len={len(self)}, "
            f"example_shape={self.example_shape}, dtype={np.dtype(self.dtype).name}, "
            f"num_classes={self.num_classes})")


class ArraySource(Source):
  """In-memory arrays (x uint8 or float32 [N, ...], y [N]) as a Source."""

  def __init__(self, x, y, num_classes: int, name: str = "arrays"):
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != np.uint8:
      x = x.astype(np.float32, copy=False)
    ArrayDataset(x[:0], y[:0], num_classes, name)  # validates shapes, dtypes and num_classes
    if len(x) != len(y):
      raise errors.DataError(f"source {name!r}: x has {len(x)} examples but y has {len(y)}. "
                             "Fix: pass one label per example.")
    self.x, self.y = x, y.astype(np.int32)
    self.name, self.num_classes = name, int(num_classes)
    self.example_shape, self.dtype = tuple(x.shape[1:]), x.dtype

  @classmethod
  def of(cls, ds: ArrayDataset) -> "ArraySource":
    return cls(ds.x, ds.y, ds.num_classes, ds.name)

  def __len__(self) -> int:
    return len(self.y)

  def _take(self, idx):
    return self.x[idx], self.y[idx]


class SubsetSource(Source):
  """Rows `idx` of a parent source (a view)."""

  def __init__(self, parent: Source, idx):
    idx = np.asarray(idx)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
      raise errors.DataError(f"subset of {parent.name!r}: indices must be a 1-D integer array, got "
                             f"shape {idx.shape} {idx.dtype}. Fix: e.g. split_indices(...)[key].")
    if idx.size and (idx.min() < 0 or idx.max() >= len(parent)):
      raise errors.DataError(f"subset of {parent.name!r}: indices span [{idx.min()}, {idx.max()}] "
                             f"but the source has {len(parent)} examples. Fix: cut the splits "
                             "from range(len(source)).")
    self.parent, self.idx = parent, idx.astype(np.int64)
    self.name, self.num_classes = parent.name, parent.num_classes
    self.example_shape, self.dtype, self.decodes = parent.example_shape, parent.dtype, parent.decodes

  def __len__(self) -> int:
    return len(self.idx)

  def _take(self, idx):
    return self.parent.take(self.idx[idx])


class PhotoSource(Source):
  """The `photos` crops, rendered when taken as uint8 pixels (only the crop origins live in
  memory); `_to_unit_float` of them is exactly `photos(...).x`."""

  def __init__(self, n: int, *, size: int = 32, split: str = "train", seed: int = 0,
               num_classes: int = 10, short_side: int = 256, cell: int = 48):
    self.origins = photo_crop_origins(n, size=size, split=split, seed=seed,
                                      num_classes=num_classes, short_side=short_side, cell=cell)
    self.size, self.short_side = size, short_side
    self.name, self.num_classes = f"photos:{split}", num_classes
    self.example_shape, self.dtype = (size, size, 3), np.dtype(np.uint8)

  def __len__(self) -> int:
    return len(self.origins)

  def _take(self, idx):
    o = self.origins[idx]
    return (render_photo_crops(o, size=self.size, short_side=self.short_side, raw=True),
            o[:, 0].astype(np.int32))


class TfdsSource(Source):
  """A prepared tfds image dataset read record by record with `tfds.data_source` (ArrayRecord).

  Fixed-size images come as uint8, or float32 when `image_size` resizes them (`resize_images`);
  variable-size ones (imagenet2012) need `image_size`: the central square of each image,
  area-resized with PIL's box filter, uint8.  Never reads more than the records asked for.
  """
  decodes = True

  def __init__(self, name: str, split: str = "train", *, data_dir=None, image_size=None):
    self.data_dir = _resolve_data_dir(data_dir)
    self._src = _open_tfds(name, split, self.data_dir)
    features = self._src.dataset_info.features
    shape = tuple(features["image"].shape)
    if len(shape) == 2:
      shape += (1,)
    self.variable = shape[0] is None or shape[1] is None
    if image_size is not None:
      _check_image_size(name, image_size)
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
      x = np.stack([_square_resize(im, self.image_size) for im in ims]) if ims else np.zeros(
          (0,) + self.example_shape, np.uint8)
      return x, labels
    x = np.stack(ims) if ims else np.zeros((0,) + self.example_shape[:2] + (1,), np.uint8)
    if self.dtype == np.float32:
      x = resize_images(x, self.image_size)
    return x, labels


def source(name: str, **kwargs) -> Source:
  """A streaming Source of `name` with `load`'s keyword arguments; take(i) gives load's row i.

  photos render crops when taken; tfds sources (imagenet, imagenet2012, cifar10, ...) read records
  when taken; gaussian and digits are small and live in memory.
  """
  if name not in _LOADERS:
    raise errors.ConfigError(
        f"unknown data source {name!r}. Fix: use one of {', '.join(SOURCES)}.")
  _bind(name, _LOADERS[name], kwargs)
  if name == "photos":
    return PhotoSource(**kwargs)
  if name in ("gaussian", "digits"):
    return ArraySource.of(load(name, **kwargs))
  kw = dict(kwargs)
  max_examples = kw.pop("max_examples", None)
  split, data_dir = kw.pop("split", "train"), kw.pop("data_dir", None)
  if name == "imagenet":
    src = TfdsSource(_imagenet_name(kw.pop("image_size", 32)), split, data_dir=data_dir)
  elif name == "imagenet2012":
    image_size = kw.pop("image_size", 64)
    _check_image_size(name, image_size)
    src = TfdsSource("imagenet2012", split, data_dir=data_dir, image_size=image_size)
  else:
    src = TfdsSource(name, split, data_dir=data_dir, image_size=kw.pop("image_size", None))
  if max_examples is not None:
    _check_count(f"{name}: max_examples", max_examples)
    src = src.subset(np.arange(min(len(src), max_examples)))
  return src


# ----------------------------------------------------------------------------------------------
# Placement: the training set on the device, or streamed from the host.


def choose_placement(n: int, example_shape, num_seeds: int, device_bytes: int,
                     requested: str = "auto") -> tuple:
  """(placement, log line): where the engine keeps a training set of n examples.

  `device` keeps x as float32 [n, *example_shape] on every device plus the per-seed labels
  (int32 [num_seeds, n]; counted whole, an upper bound on one device's share); `host` streams
  batches from the host input pipeline.  `auto` picks device when that needs less than
  DEVICE_FRACTION of `device_bytes` (one device's memory), else host.  A forced `device` that does
  not fit at all is a ConfigError with the fix.
  """
  if requested not in PLACEMENTS:
    raise errors.ConfigError(f"config.data.placement={requested!r} is unknown. Fix: use one of "
                             f"{PLACEMENTS}.")
  _check_count("choose_placement: n", n)
  _check_count("choose_placement: num_seeds", num_seeds)
  if not device_bytes or device_bytes <= 0:
    raise errors.ConfigError(f"choose_placement: device_bytes must be > 0, got {device_bytes!r}. "
                             "Fix: pass one device's memory in bytes (device_memory_bytes()).")
  need = 4 * n * int(np.prod(example_shape, dtype=np.int64)) + 4 * n * num_seeds
  frac = need / device_bytes
  size = f"{n} x {tuple(example_shape)} float32 + {num_seeds} x {n} labels = {need / 2**30:.2f} GiB"
  where = f"{frac:.1%} of {device_bytes / 2**30:.1f} GiB device memory"
  if requested == "device":
    if need > device_bytes:
      raise errors.ConfigError(
          f"config.data.placement='device' but the training set needs {size}, {where}. Fix: "
          "--config.data.placement=host (or auto), or fewer examples / a smaller image_size.")
    return "device", f"placement=device (forced): {size}, {where}"
  if requested == "host":
    return "host", f"placement=host (forced): {size} would be {where}"
  if frac < DEVICE_FRACTION:
    return "device", (f"placement=auto -> device: {size} is {where} "
                      f"(< {DEVICE_FRACTION:.0%})")
  return "host", (f"placement=auto -> host: {size} would be {where} "
                  f"(>= {DEVICE_FRACTION:.0%}); batches come from the host input pipeline")


def device_memory_bytes(device=None) -> int:
  """One device's memory in bytes: the accelerator's `bytes_limit`, or the host's RAM on CPU."""
  device = device or jax.local_devices()[0]
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  # some backends do not implement it
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


# ----------------------------------------------------------------------------------------------
# Checks, statistics, standardization.


def _chunk_rows(shape) -> int:
  row_bytes = 8 * max(1, int(np.prod(shape[1:])))
  return max(1, _CHUNK_BYTES // row_bytes)


def check_finite(x, name: str = "x") -> None:
  """Raises DataError if `x` holds NaN or inf, saying how many, in which examples."""
  x = np.asarray(x)
  if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.complexfloating):
    return
  flat = x.reshape(len(x), -1) if x.ndim else x.reshape(1, 1)
  n_nan = n_inf = 0
  bad_rows = []
  step = _chunk_rows(flat.shape)
  for s in range(0, len(flat), step):
    part = flat[s:s + step]
    nan, inf = np.isnan(part), np.isinf(part)
    n_nan += int(nan.sum())
    n_inf += int(inf.sum())
    bad_rows.append(s + np.flatnonzero((nan | inf).any(axis=1)))
  if n_nan or n_inf:
    rows = np.concatenate(bad_rows)
    raise errors.DataError(
        f"{name} has {n_nan} NaN and {n_inf} inf values in {rows.size} of {len(flat)} examples "
        f"(first bad examples at index {rows[:5].tolist()}). Fix: inspect {name}[{rows[0]}] and "
        f"the step that produced it (decoding, a division by zero, a diverged model), or drop "
        "those examples.")


def channel_stats(x, max_examples: Optional[int] = None) -> tuple:
  """Per-channel (last axis) mean and std (ddof=0) of `x` in float64, streamed over chunks.

  `x` is an array or a `Source` (read chunk by chunk, uint8 mapped to [0, 1] as `load` does; the
  same chunks as for the array, so the same numbers bit for bit).  Chunks of examples are reduced
  in float64 and merged (Chan et al.), so a 50000x32x32x3 float32 array never needs a float64
  copy.  `max_examples` uses only the first examples (a random sample when x is a shuffled split).
  """
  if isinstance(x, Source):
    n, shape = len(x), (len(x),) + tuple(x.example_shape)
    rows = lambda s, e: _to_unit_float(x.take(np.arange(s, e))[0])
  else:
    x = np.asarray(x)
    n, shape = (len(x) if x.ndim else 0), x.shape
    rows = lambda s, e: x[s:e]
  if max_examples is not None:
    _check_count("channel_stats: max_examples", max_examples)
    n = min(n, max_examples)
  if len(shape) < 2 or n == 0:
    raise errors.DataError(
        f"channel_stats needs a non-empty [N, ..., C] array, got shape {shape}. "
        "Fix: pass the training inputs.")
  c = shape[-1]
  count, mean, m2 = 0, np.zeros(c), np.zeros(c)
  step = _chunk_rows(shape)
  for s in range(0, n, step):
    part = rows(s, min(n, s + step)).reshape(-1, c).astype(np.float64)
    k = len(part)
    pm = part.mean(axis=0)
    pm2 = ((part - pm)**2).sum(axis=0)
    delta = pm - mean
    total = count + k
    mean = mean + delta * (k / total)
    m2 = m2 + pm2 + delta**2 * (count * k / total)
    count = total
  return mean, np.sqrt(m2 / count)


def standardize(x, mean, std) -> np.ndarray:
  """(x - mean) / std per channel (last axis), as float32."""
  x = np.asarray(x)
  mean = np.asarray(mean, np.float64).reshape(-1)
  std = np.asarray(std, np.float64).reshape(-1)
  c = x.shape[-1]
  if mean.shape != (c,) or std.shape != (c,):
    raise errors.DataError(
        f"standardize: x has {c} channels but mean/std have shapes {mean.shape}/{std.shape}. "
        "Fix: compute them with channel_stats on data with the same channels.")
  bad = np.flatnonzero(~(std > 0))
  if bad.size:
    raise errors.DataError(
        f"standardize: channel {bad[0]} is constant; its std is {std[bad[0]]} "
        f"(channels with std <= 0: {bad.tolist()}). Fix: drop that channel, or compute the "
        "statistics on more varied data.")
  return ((x.astype(np.float32, copy=False) - mean.astype(np.float32))
          / std.astype(np.float32)).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------
# Splits and labels.


def _check_count(field: str, n) -> None:
  if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
    raise errors.ConfigError(f"{field} must be an integer >= 0, got {n!r}. Fix: correct it.")


def _check_num_classes(k) -> None:
  if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
    raise errors.ConfigError(f"num_classes must be an integer >= 1, got {k!r}. Fix: e.g. 10.")


def split_indices(n: int, sizes: Mapping[str, int], seed: int) -> dict:
  """Disjoint index sets of range(n) cut in the given order from ONE seeded permutation.

  E.g. split_indices(50000, {"upstream": 20000, "downstream": 25000, "test": 5000}, seed=0).
  Each set is in permuted (random) order; a part of the permutation may stay unused.
  """
  _check_count("split_indices: n", n)
  for key, size in sizes.items():
    _check_count(f"split size {key!r}", size)
  total = sum(sizes.values())
  if total > n:
    raise errors.ConfigError(
        f"split sizes {dict(sizes)} sum to {total} > {n} available examples. "
        "Fix: shrink the splits so that they fit.")
  perm = np.random.default_rng(seed).permutation(n)
  out, start = {}, 0
  for key, size in sizes.items():
    out[key] = perm[start:start + size]
    start += size
  return out


def random_labels(seed_or_key: Union[int, jax.Array], n: int, num_classes: int) -> np.ndarray:
  """int32 [n] labels drawn i.i.d. uniform in [0, num_classes), once per example.

  `seed_or_key` is an int (meaning jax.random.key(seed)) or a jax PRNG key (typed or raw).
  """
  _check_count("random_labels: n", n)
  _check_num_classes(num_classes)
  key = seed_or_key
  if isinstance(key, numbers.Integral):
    key = jax.random.key(int(key))
  y = jax.random.randint(key, (n,), 0, num_classes, dtype=np.int32)
  return np.asarray(y, np.int32)
