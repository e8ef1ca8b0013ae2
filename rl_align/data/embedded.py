"""Embedded sources: work offline, synthesized or shipped with scikit-learn / scikit-image.

    from rl_align.data import embedded
    ds = embedded.gaussian(10_000, stds=[0.1 * i for i in range(1, 31)])   # Fig 20's inputs
    ds = embedded.digits()                           # 1797 8x8 grey digits, 10 real classes
    ds = embedded.photos(5000, size=16, short_side=128, cell=24)   # crops of 10 photos
    src = embedded.PhotoSource(5000, size=16)        # the same crops, rendered when taken

`rl_align.data.load` / `source` reach them by name.
"""

import functools

import numpy as np

from rl_align import errors
from rl_align.data import cache
from rl_align.data.core import ArrayDataset, Source, check_count, to_unit_float
from rl_align.seeds import check_num_classes

# Offline natural colour photos; the label of a `photos` crop is its index in this tuple.
# skimage.data.cat is the same image as chelsea; colorwheel and logo are synthetic; the grayscale
# photos (camera, coins, ...) would be separable by colour alone, so none of them is used.
PHOTO_NAMES = (
  "china",
  "flower",
  "astronaut",
  "chelsea",
  "coffee",
  "rocket",
  "motorcycle",
  "immunohistochemistry",
  "hubble_deep_field",
  "retina",
)
PHOTO_SPLITS = ("train", "val", "test")
GAUSSIAN_SPLITS = PHOTO_SPLITS


# Synthetic Gaussian data (Fig. 4 left / Fig. 20).


def _variances(stds, variances) -> np.ndarray:
  if (stds is None) == (variances is None):
    raise errors.ConfigError(
      "gaussian: pass exactly one of stds= or variances=. Fix: e.g. stds=[0.1, 0.2, ..., 3.0] "
      "(Fig. 20's diag(0.1..3.0) read as standard deviations reproduces the paper's curves)."
    )
  given, field = (stds, "stds") if stds is not None else (variances, "variances")
  v = np.asarray(given, dtype=np.float64)
  if v.ndim != 1 or v.size == 0:
    raise errors.ConfigError(
      f"gaussian: {field} must be a non-empty 1-D list, got shape {v.shape}. "
      f"Fix: pass one value per input dimension."
    )
  if not np.all(np.isfinite(v)) or np.any(v < 0):
    raise errors.ConfigError(
      f"gaussian: {field} must be finite and >= 0, got {v.tolist()}. Fix: correct {field}."
    )
  return v**2 if stds is not None else v


def _haar_orthogonal(d: int, seed: int) -> np.ndarray:
  """A Haar-distributed orthogonal d x d matrix from its own stream of `seed`."""
  g = np.random.default_rng([seed, 0]).standard_normal((d, d))
  q, r = np.linalg.qr(g)
  return q * np.sign(np.diag(r))  # sign fix makes the distribution exactly Haar


def gaussian_covariance(
  stds=None, variances=None, *, rotate: bool = False, seed: int = 0
) -> np.ndarray:
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


def gaussian(
  n: int,
  *,
  stds=None,
  variances=None,
  rotate: bool = False,
  seed: int = 0,
  num_classes: int = 10,
  split: str = "train",
) -> ArrayDataset:
  """n samples x ~ N(0, Σ) with uniform random labels (there is no real task).

  Σ as in `gaussian_covariance` (exactly one of stds / variances); the rotation depends on `seed`
  only, so every split of one seed shares Σ. Samples and labels use independent streams of
  (seed, split), so 'train', 'val' and 'test' are independent draws from the same distribution.
  """
  var = _variances(stds, variances)
  check_count("gaussian: n", n)
  check_num_classes(num_classes)
  if split not in GAUSSIAN_SPLITS:
    raise errors.ConfigError(
      f"gaussian: unknown split {split!r}. Fix: use one of {GAUSSIAN_SPLITS}."
    )
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
  loaders = {
    "china": lambda: china,
    "flower": lambda: flower,
    "motorcycle": lambda: skimage.data.stereo_motorcycle()[0],
  }
  return [loaders[k]() if k in loaders else getattr(skimage.data, k)() for k in PHOTO_NAMES]


def _library_versions() -> dict:
  """Versions of the packages that decode and resize the photos (part of the cache key)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top

  return {p: metadata.version(p) for p in ("scikit-image", "scikit-learn", "scipy", "numpy")}


def _resized_photos(short_side: int) -> dict:
  """{"stack": uint8 [P, H_max, W_max, 3], "shapes": int64 [P, 2]} (see photo_stack)."""
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
    stack[i, : r.shape[0], : r.shape[1]] = r
  return {"stack": stack, "shapes": np.array([r.shape[:2] for r in resized], np.int64)}


@functools.lru_cache(maxsize=4)
def photo_stack(short_side: int) -> tuple:
  """Photos resized (anti-aliased) to short side `short_side`, zero-padded into one array.

  Returns (stack uint8 [P, H_max, W_max, 3] read-only, ((H, W) of each photo, ...)); cached in
  this process and on disk (`rl_align.data.cache`: decoding and resizing take about 3 s).
  """
  key = {
    "short_side": int(short_side),
    "photos": PHOTO_NAMES,
    "versions": _library_versions(),
    "format": 1,
  }
  arrays = cache.cached_arrays("photos", key, lambda: _resized_photos(short_side))
  stack = arrays["stack"]
  stack.setflags(write=False)
  return stack, tuple((int(h), int(w)) for h, w in arrays["shapes"])


def photo_cell_split(i, j) -> np.ndarray:
  """Fixed split rule of grid cell (row i, column j): 'train' 70%, 'val' 10%, 'test' 20%.

  r = (i + 3 j) mod 10; r in {0, 5} -> test, r == 7 -> val, else train. Spreads every split over
  the whole photo and never depends on a seed, so splits drawn with any seeds stay disjoint.
  """
  r = (np.asarray(i) + 3 * np.asarray(j)) % 10
  return np.where((r == 0) | (r == 5), "test", np.where(r == 7, "val", "train"))


def photo_crop_origins(
  n: int,
  *,
  size: int = 32,
  split: str = "train",
  seed: int = 0,
  num_classes: int = 10,
  short_side: int = 256,
  cell: int = 48,
) -> np.ndarray:
  """Where `photos` with the same arguments cuts its crops: int64 [n, 4] (photo, top, left, flip).

  Each resized photo is tiled into cell x cell squares; `photo_cell_split` assigns every square to
  one split. A crop lies entirely inside one square of its split (uniform square, uniform offset,
  flip with probability 1/2), so crops of different splits share no pixel. photo == label;
  labels are balanced (counts differ by at most one) and come in a seeded random order.
  """
  check_count("photos: n", n)
  if split not in PHOTO_SPLITS:
    raise errors.ConfigError(f"photos: unknown split {split!r}. Fix: use one of {PHOTO_SPLITS}.")
  if not 1 <= num_classes <= len(PHOTO_NAMES):
    raise errors.ConfigError(
      f"photos: num_classes={num_classes} but only {len(PHOTO_NAMES)} offline photos exist "
      f"({', '.join(PHOTO_NAMES)}). Fix: use 1 <= num_classes <= {len(PHOTO_NAMES)}."
    )
  if not 1 <= size <= cell:
    raise errors.ConfigError(
      f"photos: crop size={size} must lie in [1, cell={cell}]. Fix: lower size or raise cell."
    )
  if cell > short_side:
    raise errors.ConfigError(
      f"photos: cell={cell} exceeds short_side={short_side}. Fix: raise short_side."
    )
  shapes = photo_stack(short_side)[1]
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
        f"cell={cell}. Fix: raise short_side or lower cell."
      )
    sel = np.flatnonzero(labels == p)
    k = rng.integers(0, ci.size, sel.size)
    off = rng.integers(0, cell - size + 1, (sel.size, 2))
    out[sel, 1] = ci[k] * cell + off[:, 0]
    out[sel, 2] = cj[k] * cell + off[:, 1]
    out[sel, 3] = rng.integers(0, 2, sel.size)
  return out


def render_photo_crops(
  origins: np.ndarray, *, size: int = 32, short_side: int = 256, raw: bool = False
) -> np.ndarray:
  """The size x size RGB crops at `origins` (from `photo_crop_origins`): float32 in [0, 1], or
  the uint8 pixels with raw=True."""
  stack = photo_stack(short_side)[0]
  windows = np.lib.stride_tricks.sliding_window_view(stack, (size, size), axis=(1, 2))
  p, top, left, flip = (origins[:, k] for k in range(4))
  crops = windows[p, top, left]  # [N, 3, size, size] uint8, a copy
  flipped = flip == 1
  crops[flipped] = crops[flipped][..., ::-1]  # flipped crops read columns backwards
  crops = np.ascontiguousarray(crops.transpose(0, 2, 3, 1))
  return crops if raw else to_unit_float(crops)


def photos(
  n: int,
  *,
  size: int = 32,
  split: str = "train",
  seed: int = 0,
  num_classes: int = 10,
  short_side: int = 256,
  cell: int = 48,
) -> ArrayDataset:
  """n RGB crops [n, size, size, 3] float32 in [0, 1] of real photos; label = which photo.

  Offline natural-image data with a learnable but not trivial task (sky, shadows and texture occur
  in several photos). Photos (PHOTO_NAMES: 2 from scikit-learn, 8 from scikit-image) are first
  resized so that their short side is `short_side` pixels (default 256: a 32x32 crop then holds an
  object part, e.g. an eye or a cup handle), then tiled into `cell`-pixel squares that
  `photo_cell_split` assigns to 'train' / 'val' / 'test', so splits never share a pixel (for equal
  short_side and cell, any size <= cell and any seeds). Deterministic given the arguments;
  `photo_crop_origins` gives each crop's position.
  """
  origins = photo_crop_origins(
    n, size=size, split=split, seed=seed, num_classes=num_classes, short_side=short_side, cell=cell
  )
  x = render_photo_crops(origins, size=size, short_side=short_side)
  return ArrayDataset(x, origins[:, 0].astype(np.int32), num_classes, f"photos:{split}")


class PhotoSource(Source):
  """The `photos` crops, rendered when taken as uint8 pixels (only the crop origins live in
  memory); `to_unit_float` of them is exactly `photos(...).x`."""

  def __init__(
    self,
    n: int,
    *,
    size: int = 32,
    split: str = "train",
    seed: int = 0,
    num_classes: int = 10,
    short_side: int = 256,
    cell: int = 48,
  ):
    self.origins = photo_crop_origins(
      n,
      size=size,
      split=split,
      seed=seed,
      num_classes=num_classes,
      short_side=short_side,
      cell=cell,
    )
    self.size, self.short_side = size, short_side
    self.name, self.num_classes = f"photos:{split}", num_classes
    self.example_shape, self.dtype = (size, size, 3), np.dtype(np.uint8)

  def __len__(self) -> int:
    return len(self.origins)

  def _take(self, idx):
    o = self.origins[idx]
    return (
      render_photo_crops(o, size=self.size, short_side=self.short_side, raw=True),
      o[:, 0].astype(np.int32),
    )
