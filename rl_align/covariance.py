"""Patch extraction and streaming, mergeable covariance estimation in float64.

Usage::

    from rl_align import covariance
    patches = covariance.extract_patches(images, k=3)          # [N, P, k*k*C], Flax kernel order
    mean, cov = covariance.patch_covariance(images, k=3)       # float64 moments, streamed
    mean, cov = covariance.patch_covariance(iter(batches), k=5)  # any iterator of [n, H, W, C]
    mean, cov = covariance.data_covariance(x)                  # vectors [N, d] (or [N, ...] flat)

    acc = covariance.MomentAccumulator()                       # mergeable running moments
    for batch in batches:                                      # [n, d] each
      acc.update(batch)
    mean, cov = acc.merge(other_acc).finalize(ddof=1)

    cov_w = covariance.weight_covariance(kernels)              # E[w w^T] of first-layer filters
    w = covariance.weight_samples(kernels)                     # [n, d] in (kh, kw, C) order

Precision: every accumulator stores a float64 count, a *shift* (the first batch's mean), the sum of
shifted samples and the sum of their outer products.  float32 inputs are shifted in float32 (exact
for data near the shift), their Gram blocks are computed by float32 BLAS over at most a few thousand
terms and added into the float64 totals, so data with a large mean keep their digits.  float64
inputs are computed in float64 throughout.

Speed: `patch_covariance` never materializes patches for images of moderate width (method "band"):
it accumulates, per pixel row r, the second moments between row r and rows r..r+k-1 of the shifted
images (one float32 matmul per row, contracting over the batch) and folds them into the k*k*C
patch Gram when finalized.  That is exact (the same sums, reordered), needs ~W/k^3 of the flops of
a patch Gram and no patch buffer.  Wide images use method "patches" (shifted-slice im2col + Gram).
Both run one thread per core, each calling single-threaded BLAS (process-wide BLAS limit while
`patch_moments` runs): multi-threaded OpenBLAS on many mid-sized matmuls was 3-5x slower than
one thread whenever other processes shared the 2 cores.
"""

import concurrent.futures
import contextlib
import numbers
import os
from typing import Iterable, Iterator, Optional

import jax.numpy as jnp
import numpy as np

from rl_align import errors

_GRAM_ROWS = 8192  # rows per float32 Gram call before adding into float64
_BAND_BYTES = 256 << 20  # largest float64 band state of method "band" under method="auto"
_PATCH_BYTES = 16 << 20  # patch buffer per chunk of method "patches"
METHODS = ("auto", "band", "patches")


# ----------------------------------------------------------------------------------------------
# Checks.


def _check_k(k) -> int:
  if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
    raise errors.ConfigError(f"patch size k must be an integer >= 1, got {k!r}. Fix: e.g. k=3.")
  return int(k)


def _check_batch_size(batch_size) -> int:
  if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
    raise errors.ConfigError(
      f"batch_size must be an integer >= 1, got {batch_size!r}. Fix: e.g. batch_size=1024."
    )
  return int(batch_size)


def _compute_dtype(dtype, name: str):
  """float64 inputs are processed in float64; other float types (16/32-bit) in float32."""
  dtype = np.dtype(dtype)
  if dtype == np.float64:
    return np.float64
  if np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16":
    return np.float32
  raise errors.DataError(
    f"{name} has dtype {dtype}, but covariances need floating-point inputs. Fix: convert and "
    f"standardize first, e.g. x = x.astype(np.float32) / 255, or data.standardize(x, "
    "*data.channel_stats(x))."
  )


def _check_images(x, name: str, k: Optional[int] = None, shape=None):
  if getattr(x, "ndim", None) != 4:
    raise errors.DataError(
      f"{name} must be images [N, H, W, C], got shape {getattr(x, 'shape', type(x))}. "
      "Fix: add the missing axes (e.g. x[..., None] for one channel) or use data_covariance "
      "for vectors."
    )
  if shape is not None and tuple(x.shape[1:]) != tuple(shape):
    raise errors.DataError(
      f"{name} has images of shape {tuple(x.shape[1:])}, but the first batch had {tuple(shape)}. "
      "Fix: yield batches of equally sized images (resize or crop them first)."
    )
  if k is not None and (k > x.shape[1] or k > x.shape[2]):
    raise errors.DataError(
      f"patch size k={k} is larger than the images ({x.shape[1]}x{x.shape[2]}) in {name}. "
      f"Fix: use k <= {min(x.shape[1], x.shape[2])} or larger images."
    )


def _not_finite(name: str, where: str) -> errors.DataError:
  return errors.DataError(
    f"{name} contains NaN or inf values ({where}). Fix: find them with "
    "data.check_finite(x) and repair or drop those examples before estimating covariances."
  )


# ----------------------------------------------------------------------------------------------
# Patches.


def extract_patches(images, k: int):
  """All k x k patches (stride 1, VALID) of `images` [N, H, W, C] -> [N, P, k*k*C].

  The flattened patch uses Flax's kernel order (kh, kw, C), so that for a Flax conv kernel
  W [k, k, C, F]: conv(x, W) == extract_patches(x, k) @ W.reshape(-1, F).
  Implemented with k*k shifted slices (1.6-2x faster than conv_general_dilated_patches on CPU).
  """
  k = _check_k(k)
  _check_images(images, "images", k)
  n, h, w, c = images.shape
  ho, wo = h - k + 1, w - k + 1
  cols = [images[:, i : i + ho, j : j + wo, :] for i in range(k) for j in range(k)]
  patches = jnp.stack(cols, axis=3)  # [N, Ho, Wo, k*k, C]  -> (kh, kw) major, C minor
  return patches.reshape(n, ho * wo, k * k * c)


def patches_np(y: np.ndarray, k: int) -> np.ndarray:
  """NumPy twin of extract_patches, flattened to [n * P, k*k*C] (one copy, no stack)."""
  n, h, w, c = y.shape
  ho, wo = h - k + 1, w - k + 1
  out = np.empty((n, ho, wo, k, k, c), y.dtype)
  for i in range(k):
    for j in range(k):
      out[:, :, :, i, j, :] = y[:, i : i + ho, j : j + wo, :]
  return out.reshape(n * ho * wo, k * k * c)


# ----------------------------------------------------------------------------------------------
# Moments of vectors.


def _gram64(y: np.ndarray) -> np.ndarray:
  """Gram y^T y [d, d] of the rows of y [n, d] as float64, from float32 blocks of <= _GRAM_ROWS."""
  g = np.zeros((y.shape[1], y.shape[1]))
  for start in range(0, len(y), _GRAM_ROWS):
    part = y[start : start + _GRAM_ROWS]
    g += part.T @ part
  return g


class MomentAccumulator:
  """Streaming, mergeable first and second moments of d-dimensional samples, in float64.

  State: `count`, `shift` [d] (the first batch's mean, rounded to the input dtype), `sum` [d] =
  sum of (x - shift) and `gram` [d, d] = sum of (x - shift)(x - shift)^T.  `update` and `merge`
  return self, so ``MomentAccumulator().update(a).merge(b).finalize()`` works.
  """

  def __init__(self):
    self.count = 0
    self.shift = None
    self.sum = None
    self.gram = None

  def __repr__(self):
    dim = None if self.shift is None else self.shift.shape[0]
    return f"MomentAccumulator(count={self.count}, dim={dim})"

  @classmethod
  def from_moments(cls, count: int, shift, shifted_sum, shifted_gram) -> "MomentAccumulator":
    """An accumulator holding already reduced shifted moments (all cast to float64)."""
    acc = cls()
    acc.count = int(count)
    acc.shift = np.asarray(shift, np.float64).copy()
    acc.sum = np.asarray(shifted_sum, np.float64).copy()
    acc.gram = np.asarray(shifted_gram, np.float64).copy()
    return acc

  def _check_dim(self, d: int, what: str) -> None:
    if self.shift is not None and self.shift.shape[0] != d:
      raise errors.DataError(
        f"{what} has dimension {d}, but this accumulator holds {self.shift.shape[0]}-dim "
        "samples. Fix: use one accumulator per feature dimension."
      )

  def update(self, batch) -> "MomentAccumulator":
    """Adds the rows of `batch` [n, d] (float; float32 is Gram-ed in float32, summed in float64)."""
    x = np.asarray(batch)
    if x.ndim != 2:
      raise errors.DataError(
        f"MomentAccumulator.update needs a batch [n, d], got shape {x.shape}. "
        "Fix: reshape it to (len(batch), -1)."
      )
    x = x.astype(_compute_dtype(x.dtype, "batch"), copy=False)
    self._check_dim(x.shape[1], "batch")
    if len(x) == 0:
      return self
    if self.shift is None:
      first = x.mean(axis=0, dtype=np.float64)
      if not np.all(np.isfinite(first)):
        raise _not_finite("batch", "first batch")
      self.shift = first.astype(x.dtype).astype(np.float64)
      self.sum = np.zeros_like(self.shift)
      self.gram = np.zeros((x.shape[1], x.shape[1]))
    y = x - self.shift.astype(x.dtype)
    s, g = y.sum(axis=0, dtype=np.float64), _gram64(y)
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(g))):
      raise _not_finite("batch", f"batch after {self.count} samples")
    self.count += len(x)
    self.sum += s
    self.gram += g
    return self

  def merge(self, other: "MomentAccumulator") -> "MomentAccumulator":
    """Adds another accumulator's samples (re-expressed around this one's shift) into self."""
    if not isinstance(other, MomentAccumulator):
      raise errors.DataError(
        f"merge needs a MomentAccumulator, got {type(other).__name__}. Fix: wrap the samples "
        "with MomentAccumulator().update(x) first."
      )
    if other.count == 0:
      return self
    self._check_dim(other.shift.shape[0], "the merged accumulator")
    if self.count == 0:
      self.count, self.shift = other.count, other.shift.copy()
      self.sum, self.gram = other.sum.copy(), other.gram.copy()
      return self
    delta = other.shift - self.shift
    s = other.sum + other.count * delta
    g = (
      other.gram
      + np.outer(other.sum, delta)
      + np.outer(delta, other.sum)
      + other.count * np.outer(delta, delta)
    )
    self.count += other.count
    self.sum += s
    self.gram += g
    return self

  def finalize(self, ddof: int = 1) -> tuple:
    """(mean [d], cov [d, d]) in float64; cov divides by count - ddof (1: unbiased, as np.cov)."""
    if self.count - ddof <= 0:
      raise errors.DataError(
        f"covariance needs more than ddof={ddof} samples, got {self.count}. "
        "Fix: feed more data (or ddof=0)."
      )
    mean_shifted = self.sum / self.count
    centered = self.gram - np.outer(self.sum, mean_shifted)
    cov = (centered + centered.T) / (2.0 * (self.count - ddof))
    return self.shift + mean_shifted, cov


def _batches(x_or_iter, batch_size: int) -> Iterator[np.ndarray]:
  """Slices an array [N, ...] into host batches; re-slices each array an iterable yields."""
  source: Iterable = (x_or_iter,) if hasattr(x_or_iter, "shape") else x_or_iter
  for item in source:
    item = item if hasattr(item, "shape") else np.asarray(item)
    if item.ndim == 0 or len(item) <= batch_size:
      yield np.asarray(item)
      continue
    for start in range(0, len(item), batch_size):
      yield np.asarray(item[start : start + batch_size])


def data_moments(x, batch_size: int = 8192) -> MomentAccumulator:
  """MomentAccumulator of the vectors x [N, d] (or [N, ...] flattened; or an iterator of such)."""
  batch_size = _check_batch_size(batch_size)
  acc = MomentAccumulator()
  for b in _batches(x, batch_size):
    if b.ndim < 2:
      raise errors.DataError(
        f"data_covariance needs samples [N, d] (or [N, ...]), got shape {b.shape}. "
        "Fix: for N scalars pass x[:, None]."
      )
    acc.update(b.reshape(len(b), -1))
  return acc


def data_covariance(x, batch_size: int = 8192, ddof: int = 1) -> tuple:
  """(mean [d], cov [d, d]) float64 of x [N, d] (or [N, ...] flattened, or an iterator of such)."""
  return data_moments(x, batch_size).finalize(ddof)


# ----------------------------------------------------------------------------------------------
# Moments of image patches.


def _band_bytes(h: int, w: int, c: int, k: int) -> int:
  return 8 * h * k * (w * c) ** 2


def resolve_method(method: str, shape, k: int) -> str:
  """The patch-Gram method `patch_moments` uses for images of `shape` (H, W, C) and k x k patches:
  `method` itself, or for "auto" the faster of "band" and "patches" (within a memory budget)."""
  if method not in METHODS:
    raise errors.ConfigError(f"method must be one of {METHODS}, got {method!r}. Fix: use 'auto'.")
  if method != "auto":
    return method
  h, w, c = shape
  # Per image the band costs 2 H k (W C)^2 flops, the patch Gram 2 P (k k C)^2 plus an im2col
  # copy: their ratio is ~W / k^3.  Measured on a 2-core CPU (32..128 px, C=3) the band was
  # faster up to W ~ 90 (k=3), ~110 (k=5), ~130 (k=7).
  small = _band_bytes(h, w, c, k) <= _BAND_BYTES
  return "band" if small and w <= 56 + 12 * k else "patches"


class _Threads:
  """Maps a function over items on `workers` threads of an executor, or inline without one."""

  def __init__(self, executor=None, workers: int = 1):
    self.executor, self.workers = executor, workers if executor else 1

  def map(self, fn, items) -> list:
    if self.executor is None:
      return [fn(item) for item in items]
    return list(self.executor.map(fn, items))


@contextlib.contextmanager
def blas_threads():
  """_Threads with one thread per core, each calling single-threaded BLAS (inline on one core or
  without threadpoolctl).

  Many mid-sized float32 matmuls on multi-threaded OpenBLAS collapse when other processes share
  the cores (threads spin waiting for each other: 3-5x slower than one thread on a loaded 2-core
  machine).  Independent single-threaded calls on our own threads keep both the idle speed and
  the loaded one.  The BLAS limit is process-wide while the context is open.
  """
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  try:
    import threadpoolctl  # pylint: disable=g-import-not-at-top
  except ImportError:
    threadpoolctl = None
  if not cores or cores < 2 or threadpoolctl is None:
    yield _Threads()
    return
  with threadpoolctl.threadpool_limits(1, user_api="blas"):
    with concurrent.futures.ThreadPoolExecutor(cores) as executor:
      yield _Threads(executor, cores)


class _BandGram:
  """Per pixel row r: sum over images of y[r] (x) y[r:r+k] for shifted images y; folds to patches.

  band[r, (w, c), dr, (w', c')] = sum_n y_n[r, w, c] * y_n[r + dr, w', c'] (0 where r + dr >= H).
  """

  def __init__(self, shape, k: int, threads: Optional[_Threads] = None):
    h, w, c = shape
    self.shape, self.k, self.threads = (h, w, c), k, threads or _Threads()
    self.band = np.zeros((h, w * c, k, w * c))

  def _rows(self, z: np.ndarray, rows) -> None:
    n, h, wc = z.shape
    for r in rows:
      m = min(self.k, h - r)
      g = z[:, r, :].T @ z[:, r : r + m, :].reshape(n, m * wc)
      self.band[r, :, :m, :] += g.reshape(wc, m, wc)

  def update(self, y: np.ndarray) -> None:
    (h, w, c), workers = self.shape, self.threads.workers
    z = y.reshape(len(y), h, w * c)
    rows = [range(i, h, workers) for i in range(workers)]  # interleaved: balanced work
    self.threads.map(lambda part: self._rows(z, part), rows)

  def gram(self) -> np.ndarray:
    """Sum over all patches of y_p y_p^T [d, d], d = k*k*C in (kh, kw, C) order."""
    (h, w, c), k = self.shape, self.k
    ho, wo = h - k + 1, w - k + 1
    gram = np.zeros((k, k, c, k, k, c))
    cols = np.arange(k)[:, None] + np.arange(wo)[None, :]  # [k, Wo]: column of offset aj
    for ai in range(k):
      for dr in range(k - ai):
        t = self.band[ai : ai + ho, :, dr, :].sum(axis=0).reshape(w, c, w, c)
        blk = t[cols[:, None, :], :, cols[None, :, :], :].sum(axis=2)  # [aj, bj, c, c']
        gram[ai, :, :, ai + dr, :, :] = blk.transpose(0, 2, 1, 3)
        if dr:
          gram[ai + dr, :, :, ai, :, :] = blk.transpose(1, 3, 0, 2)
    return gram.reshape(k * k * c, k * k * c)


class _PatchGram:
  """Method "patches": im2col by shifted slices into a bounded buffer, then a float32 Gram."""

  def __init__(self, shape, k: int, threads: Optional[_Threads] = None):
    h, w, c = shape
    self.k, self.threads = k, threads or _Threads()
    self.per_image = (h - k + 1) * (w - k + 1) * k * k * c
    self.total = np.zeros((k * k * c, k * k * c))

  def update(self, y: np.ndarray) -> None:
    step = max(1, _PATCH_BYTES // (self.per_image * y.itemsize * self.threads.workers))
    chunks = [y[start : start + step] for start in range(0, len(y), step)]
    for g in self.threads.map(lambda part: _gram64(patches_np(part, self.k)), chunks):
      self.total += g

  def gram(self) -> np.ndarray:
    return self.total


def _window_sums(pixel_sum: np.ndarray, k: int) -> np.ndarray:
  """Sum over all k x k windows of a summed image [H, W, C] -> [k*k*C] in (kh, kw, C) order."""
  h, w, _ = pixel_sum.shape
  ho, wo = h - k + 1, w - k + 1
  return np.concatenate(
    [pixel_sum[i : i + ho, j : j + wo].sum(axis=(0, 1)) for i in range(k) for j in range(k)]
  )


def patch_moments(
  images_or_iterator, k: int, batch_size: int = 512, method: str = "auto"
) -> MomentAccumulator:
  """MomentAccumulator of all k x k patches (stride 1, VALID, (kh, kw, C) order), streamed.

  Args:
    images_or_iterator: float images [N, H, W, C] (numpy or jax), or an iterable of such batches
      (all with the same H, W, C).  Integer images raise DataError: standardize them first.
    k: patch size.
    batch_size: images per step; memory is O(batch_size), flat in N.
    method: "band" (row-band second moments, no patch buffer), "patches" (im2col + Gram) or
      "auto" (band unless the images are wide).  Both give the same sums.
  Returns:
    A MomentAccumulator with count = N * P patches; merge several to pool datasets.
  """
  k = _check_k(k)
  batch_size = _check_batch_size(batch_size)
  stream = None
  with blas_threads() as threads:
    for x in _batches(images_or_iterator, batch_size):
      seen = stream.seen if stream else 0
      _check_images(
        x,
        f"images (batch at image #{seen})" if seen else "images",
        k,
        stream.shape if stream else None,
      )
      if len(x):
        stream = stream or _PatchStream(x, k, method, threads)
        stream.update(x)
  if stream is None:
    raise errors.DataError(
      "patch_covariance got no images. Fix: pass a non-empty [N, H, W, C] "
      "array or an iterator that yields at least one batch."
    )
  return stream.moments()


class _PatchStream:
  """Running patch moments around a per-channel shift (the first batch's channel means)."""

  def __init__(self, first: np.ndarray, k: int, method: str, threads: _Threads):
    self.k, self.shape = k, tuple(first.shape[1:])
    self.dtype = _compute_dtype(first.dtype, "images")
    self.gram = {"band": _BandGram, "patches": _PatchGram}[resolve_method(method, self.shape, k)](
      self.shape, k, threads
    )
    mean = first.reshape(-1, self.shape[-1]).mean(axis=0, dtype=np.float64)
    if not np.all(np.isfinite(mean)):
      raise _not_finite("images", f"in images #0..#{len(first) - 1}")
    self.shift = mean.astype(self.dtype)  # exactly representable in the compute dtype
    self.pixel_sum = np.zeros(self.shape)
    self.buffer = np.empty((len(first),) + self.shape, self.dtype)  # reused: no page faults
    self.seen = 0

  def update(self, x: np.ndarray) -> None:
    if _compute_dtype(x.dtype, f"images (batch at image #{self.seen})") != self.dtype:
      raise errors.DataError(
        f"images batch at image #{self.seen} has dtype {x.dtype}, the first batch "
        f"{np.dtype(self.dtype)}. Fix: cast all batches to one float dtype."
      )
    if len(x) > len(self.buffer):
      self.buffer = np.empty((len(x),) + self.shape, self.dtype)
    y = np.subtract(x.astype(self.dtype, copy=False), self.shift, out=self.buffer[: len(x)])
    batch_sum = y.sum(axis=0, dtype=np.float64)
    if not np.all(np.isfinite(batch_sum)):
      raise _not_finite("images", f"in images #{self.seen}..#{self.seen + len(x) - 1}")
    self.gram.update(y)
    self.pixel_sum += batch_sum
    self.seen += len(x)

  def moments(self) -> MomentAccumulator:
    gram = self.gram.gram()
    if not np.all(np.isfinite(gram)):
      raise errors.NumericalError(
        "patch second moments overflowed float32. Fix: standardize the images first "
        "(data.standardize(x, *data.channel_stats(x)))."
      )
    k, (h, w, _) = self.k, self.shape
    count = self.seen * (h - k + 1) * (w - k + 1)
    return MomentAccumulator.from_moments(
      count, np.tile(self.shift.astype(np.float64), k * k), _window_sums(self.pixel_sum, k), gram
    )


def patch_covariance(
  images_or_iterator, k: int, batch_size: int = 512, ddof: int = 1, method: str = "auto"
) -> tuple:
  """(mean [d], cov [d, d]) float64 of the k x k patches (d = k*k*C, Flax (kh, kw, C) order).

  Streams `images_or_iterator` ([N, H, W, C] float array or iterable of batches) in batches of
  `batch_size` images; memory is flat in N.  See `patch_moments` for the arguments.
  """
  return patch_moments(images_or_iterator, k, batch_size, method).finalize(ddof)


# ----------------------------------------------------------------------------------------------
# First-layer weights as samples.


def weight_samples(kernels) -> np.ndarray:
  """First-layer weights as samples [n_samples, d] in float64, pooled over filters and seeds.

  Ranks: 2 dense [d, h]; 3 dense with seeds [S, d, h]; 4 conv [kh, kw, C, F];
  5 conv with seeds [S, kh, kw, C, F].  Conv filters flatten in (kh, kw, C) order, the order of
  `extract_patches`, so a filter equal to a patch gives the same vector.
  """
  w = np.asarray(kernels)
  _compute_dtype(w.dtype, "kernels")
  w = w.astype(np.float64)
  if w.ndim == 2:
    out = w.T
  elif w.ndim == 3:
    out = w.transpose(0, 2, 1).reshape(-1, w.shape[1])
  elif w.ndim == 4:
    out = w.reshape(-1, w.shape[-1]).T
  elif w.ndim == 5:
    out = w.transpose(0, 4, 1, 2, 3).reshape(-1, int(np.prod(w.shape[1:4])))
  else:
    raise errors.DataError(
      f"kernels must be [d, h], [S, d, h], [kh, kw, C, F] or [S, kh, kw, C, F], got shape "
      f"{w.shape}. Fix: pass the first layer's kernel (stack seeds on a leading axis)."
    )
  if out.size == 0:
    raise errors.DataError(f"kernels of shape {w.shape} hold no weights. Fix: pass a real layer.")
  if not np.all(np.isfinite(out)):
    raise _not_finite("kernels", f"{int(np.sum(~np.isfinite(out)))} entries")
  return out


def weight_covariance(kernels, centered: bool = False) -> np.ndarray:
  """Sigma_w [d, d] float64 of the flattened first-layer filters/neurons (see `weight_samples`).

  centered=False: the second moment E[w w^T] = W^T W / n (the paper's Sigma_w; E[w] = 0 in
  theory).  centered=True: the covariance with ddof=1 (as np.cov).
  """
  w = weight_samples(kernels)
  if not centered:
    return (w.T @ w) / len(w)
  if len(w) < 2:
    raise errors.DataError(
      "a centered weight covariance needs >= 2 samples, got 1. "
      "Fix: pool more filters/seeds or use centered=False."
    )
  w = w - w.mean(axis=0)
  return (w.T @ w) / (len(w) - 1)
