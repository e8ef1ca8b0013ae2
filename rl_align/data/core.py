"""The containers every source shares: `ArrayDataset` (in memory) and `Source` (random access).

from rl_align.data import core
ds = core.ArrayDataset(x, y, num_classes=10, name="mine")   # validated float32 / int32
src = core.ArraySource.of(ds)                                # the same rows as a Source
x, y = src.take([5, 2, 9])
view = src.subset(np.arange(100))                            # nothing is read
"""

import dataclasses
import numbers

import numpy as np

from rl_align import errors

# Streamed reductions touch at most this many float64 bytes at once.
CHUNK_BYTES = 64 << 20


def check_count(field: str, n) -> None:
  """Raises ConfigError unless n is an integer >= 0 (named `field` in the message)."""
  if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
    raise errors.ConfigError(f"{field} must be an integer >= 0, got {n!r}. Fix: correct it.")


def to_unit_float(images: np.ndarray) -> np.ndarray:
  """uint8 pixels mapped to float32 [0, 1] (x / 255); other dtypes cast to float32."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) * np.float32(1 / 255)
  return images.astype(np.float32, copy=False)


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
        "Fix: add a feature axis, e.g. x[:, None]."
      )
    if y.ndim != 1 or len(y) != len(x):
      raise errors.DataError(
        f"dataset {self.name!r}: y must be [N] with N = len(x) = {len(x)}, got shape {y.shape}. "
        "Fix: pass one integer label per example."
      )
    if not np.issubdtype(y.dtype, np.integer):
      raise errors.DataError(
        f"dataset {self.name!r}: labels must be integers, got dtype {y.dtype}. "
        "Fix: convert class ids with y.astype(np.int32)."
      )
    if not isinstance(self.num_classes, numbers.Integral) or self.num_classes < 1:
      raise errors.ConfigError(
        f"dataset {self.name!r}: num_classes must be an integer >= 1, got {self.num_classes!r}. "
        "Fix: pass the number of classes K."
      )
    if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
      raise errors.DataError(
        f"dataset {self.name!r}: labels span [{y.min()}, {y.max()}] but num_classes is "
        f"{self.num_classes}. Fix: labels must lie in [0, num_classes); raise num_classes."
      )
    object.__setattr__(self, "x", x.astype(np.float32, copy=False))
    object.__setattr__(self, "y", y.astype(np.int32, copy=False))
    object.__setattr__(self, "num_classes", int(self.num_classes))

  def __len__(self) -> int:
    return len(self.y)

  def __repr__(self) -> str:
    return (
      f"ArrayDataset(name={self.name!r}, x={self.x.shape} {self.x.dtype}, "
      f"y={self.y.shape} {self.y.dtype}, num_classes={self.num_classes})"
    )

  def subset(self, idx) -> "ArrayDataset":
    """The examples at `idx` (integer indices, a slice or a boolean mask)."""
    return ArrayDataset(self.x[idx], self.y[idx], self.num_classes, self.name)

  def with_labels(self, y, num_classes: int) -> "ArrayDataset":
    """Same inputs (not copied) with new labels, e.g. random ones."""
    return ArrayDataset(self.x, y, num_classes, self.name)


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
        f"[{idx.min()}, {idx.max()}] ({idx.dtype}). Fix: index within the source's length."
      )
    return self._take(np.where(idx < 0, idx + n, idx).astype(np.int64))

  def __getitem__(self, i):
    x, y = self.take([i])
    return x[0], y[0]

  def subset(self, idx) -> "Source":
    """The examples at `idx` (integer indices), as a view: nothing is read."""
    return SubsetSource(self, idx)

  def __repr__(self) -> str:
    return (
      f"{type(self).__name__}(name={self.name!r}, len={len(self)}, "
      f"example_shape={self.example_shape}, dtype={np.dtype(self.dtype).name}, "
      f"num_classes={self.num_classes})"
    )


class ArraySource(Source):
  """In-memory arrays (x uint8 or float32 [N, ...], y [N]) as a Source."""

  def __init__(self, x, y, num_classes: int, name: str = "arrays"):
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != np.uint8:
      x = x.astype(np.float32, copy=False)
    ArrayDataset(x[:0], y[:0], num_classes, name)  # validates shapes, dtypes and num_classes
    if len(x) != len(y):
      raise errors.DataError(
        f"source {name!r}: x has {len(x)} examples but y has {len(y)}. "
        "Fix: pass one label per example."
      )
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
      raise errors.DataError(
        f"subset of {parent.name!r}: indices must be a 1-D integer array, got "
        f"shape {idx.shape} {idx.dtype}. Fix: e.g. split_indices(...)[key]."
      )
    if idx.size and (idx.min() < 0 or idx.max() >= len(parent)):
      raise errors.DataError(
        f"subset of {parent.name!r}: indices span [{idx.min()}, {idx.max()}] "
        f"but the source has {len(parent)} examples. Fix: cut the splits "
        "from range(len(source))."
      )
    self.parent, self.idx = parent, idx.astype(np.int64)
    self.name, self.num_classes = parent.name, parent.num_classes
    self.example_shape, self.dtype, self.decodes = (
      parent.example_shape,
      parent.dtype,
      parent.decodes,
    )

  def __len__(self) -> int:
    return len(self.idx)

  def _take(self, idx):
    return self.parent.take(self.idx[idx])
