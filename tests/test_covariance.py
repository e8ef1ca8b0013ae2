"""Tests of rl_align.covariance: patch order, streaming == one-shot, merging, precision, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl_align import covariance
from rl_align import errors
from tests.tolerances import assert_close, f32_tol, f64_tol


def _images(n, h, w, c, seed=0, mean=0.0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, h, w, c)) + rng.standard_normal(c) + mean
  # Correlate neighbouring pixels so the patch covariance has structure.
  x = x + 0.5 * np.roll(x, 1, axis=1) + 0.3 * np.roll(x, 1, axis=2)
  return x.astype(dtype)


def _moment_tols(ref_mean, ref_cov, count, shift, f32_len=0):
  """(mean, cov) rounding bounds (tests/tolerances.py) of a streamed estimate around `shift` vs the
  float64 one-shot reference.  Terms y = x - shift have mean |y_i| <= sqrt(M_ii) and mean |y_i y_j|
  <= sqrt(M_ii M_jj) (Cauchy-Schwarz), M = diag(cov) + (mean - shift)^2.  Float64 sums run over
  `count` terms (+ 8 for merges, centering, division); float32 input adds one rounding of y and
  float32 Gram blocks over at most `f32_len` terms (batch images x patches, <= 8192 rows)."""
  m = np.sqrt(np.diag(ref_cov) + (ref_mean - shift) ** 2)
  mean_tol = f64_tol(m, count + 8) + f64_tol(np.abs(ref_mean), 1)
  cov_tol = f64_tol(np.outer(m, m), count + 8)
  if f32_len:
    mean_tol = mean_tol + f32_tol(m, 1)
    cov_tol = cov_tol + f32_tol(np.outer(m, m), f32_len + 2)
  return mean_tol, cov_tol


def _gram_tol(w):
  """Rounding bound of w.T @ w / n in float64 (any order): magnitude |w|.T @ |w| / n, n terms."""
  return f64_tol(np.abs(w).T @ np.abs(w) / len(w), len(w) + 1)


def _reference(x, k):
  """One-shot float64: every patch by explicit loops, then np.cov."""
  x = np.asarray(x, np.float64)
  n, h, w, c = x.shape
  rows = [
    x[i, r : r + k, s : s + k, :].reshape(-1)
    for i in range(n)
    for r in range(h - k + 1)
    for s in range(w - k + 1)
  ]
  p = np.stack(rows)
  return p.mean(axis=0), np.cov(p, rowvar=False)


@pytest.mark.parametrize("k,h,w", [(3, 7, 9), (5, 9, 6), (3, 32, 32)])
def test_extract_patches_matches_flax_order_convolution(k, h, w):
  c, f = 3, 4
  rng = np.random.default_rng(k)
  x = jnp.asarray(rng.standard_normal((2, h, w, c)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((k, k, c, f)), jnp.float32)
  conv = jax.lax.conv_general_dilated(
    x,
    kernel,
    (1, 1),
    "VALID",
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    precision=jax.lax.Precision.HIGHEST,
  )
  patches = covariance.extract_patches(x, k)
  assert patches.shape == (2, (h - k + 1) * (w - k + 1), k * k * c)
  out = jnp.einsum(
    "npd,df->npf", patches, kernel.reshape(-1, f), precision=jax.lax.Precision.HIGHEST
  )
  # Two float32 sums of k*k*C products in any order: bounded by |patches| @ |kernel| (tolerances.py).
  mag = jnp.einsum(
    "npd,df->npf",
    jnp.abs(patches),
    jnp.abs(kernel).reshape(-1, f),
    precision=jax.lax.Precision.HIGHEST,
  )
  assert_close(out, conv.reshape(2, -1, f), f32_tol(mag, k * k * c), "patches @ kernel vs conv")
  np_patches = covariance.patches_np(np.asarray(x), k)
  np.testing.assert_array_equal(np_patches, np.asarray(patches).reshape(-1, k * k * c))


@pytest.mark.parametrize("method", ["band", "patches"])
@pytest.mark.parametrize("k,shape", [(3, (8, 11, 3)), (5, (9, 7, 3)), (1, (4, 5, 2))])
def test_streaming_patch_covariance_equals_one_shot_float64(method, k, shape):
  x = _images(23, *shape)
  ref_mean, ref_cov = _reference(x, k)
  mean, cov = covariance.patch_covariance(x, k, batch_size=5, method=method)
  count = 23 * (shape[0] - k + 1) * (shape[1] - k + 1)
  shift = covariance.patch_moments(x, k, batch_size=5, method=method).shift
  mean_tol, cov_tol = _moment_tols(ref_mean, ref_cov, count, shift)  # float64: ~1e-13
  assert_close(mean, ref_mean, mean_tol, "mean")
  assert_close(cov, ref_cov, cov_tol, "cov")
  # float32 input: float32 Gram blocks, float64 totals.
  x32 = x.astype(np.float32)
  mean32, cov32 = covariance.patch_covariance(x32, k, batch_size=7, method=method)
  ref32 = _reference(x32, k)
  shift32 = covariance.patch_moments(x32, k, batch_size=7, method=method).shift
  mean_tol, cov_tol = _moment_tols(*ref32, count, shift32, f32_len=count // 23 * 7)
  assert_close(mean32, ref32[0], mean_tol, "mean32")
  assert_close(cov32, ref32[1], cov_tol, "cov32")


def test_iterator_of_batches_equals_array_and_counts_patches():
  x = _images(20, 6, 8, 3, seed=1, dtype=np.float32)
  batches = (x[i : i + 6] for i in range(0, 20, 6))  # uneven last batch, lazy generator
  acc = covariance.patch_moments(batches, 3, batch_size=4)
  assert acc.count == 20 * 4 * 6
  mean, cov = acc.finalize()
  ref_mean, ref_cov = covariance.patch_covariance(x, 3)
  # Float32 Grams around other shifts, each within the bound of the exact moments: twice it.
  tols = [
    _moment_tols(ref_mean, ref_cov, acc.count, sh, f32_len=20 * 24)
    for sh in (acc.shift, covariance.patch_moments(x, 3).shift)
  ]
  assert_close(mean, ref_mean, tols[0][0] + tols[1][0], "mean")
  assert_close(cov, ref_cov, tols[0][1] + tols[1][1], "cov")
  # Exact: the same program on the same values (a jax array is read as numpy).
  j_mean, j_cov = covariance.patch_covariance(jnp.asarray(x), 3)  # jax arrays too
  np.testing.assert_array_equal(j_cov, ref_cov)
  np.testing.assert_array_equal(j_mean, ref_mean)


def test_merging_accumulators_equals_one_accumulator():
  rng = np.random.default_rng(2)
  a = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + 5.0
  b = rng.standard_normal((200, 6)) - 3.0  # different mean -> different shift
  one = covariance.MomentAccumulator().update(a[:100]).update(a[100:]).update(b)
  merged = covariance.MomentAccumulator().update(a).merge(covariance.MomentAccumulator().update(b))
  both = np.concatenate([a, b])
  ref_cov = np.cov(both, rowvar=False)
  for acc in (one, merged):
    assert acc.count == 500
    mean, cov = acc.finalize()
    # float64 around the first batch's shift; b's moments re-expressed around it by the merge.
    mean_tol, cov_tol = _moment_tols(both.mean(0), ref_cov, 500, acc.shift)
    assert_close(mean, both.mean(0), mean_tol, "mean")
    assert_close(cov, ref_cov, cov_tol, "cov")
  mean0, cov0 = merged.finalize(ddof=0)
  assert_close(cov0, np.cov(both, rowvar=False, ddof=0), cov_tol, "cov ddof=0")
  # Merging into / with an empty accumulator is the identity: exact (the arrays are copied).
  empty = covariance.MomentAccumulator()
  np.testing.assert_array_equal(empty.merge(merged).finalize()[1], merged.finalize()[1])
  # Patch accumulators merge like any other.
  x = _images(10, 6, 6, 3, seed=3)
  halves = covariance.patch_moments(x[:4], 3).merge(covariance.patch_moments(x[4:] + 2.0, 3))
  ref = _reference(np.concatenate([x[:4], x[4:] + 2.0]), 3)
  assert_close(halves.finalize()[1], ref[1], _moment_tols(*ref, 160, halves.shift)[1], "patches")


def test_large_mean_float32_data_keeps_precision():
  rng = np.random.default_rng(4)
  x = (1e4 + rng.standard_normal((20000, 5)) * np.arange(1, 6)).astype(np.float32)
  ref = np.cov(x.astype(np.float64), rowvar=False)
  _, cov = covariance.data_covariance(x, batch_size=3000)
  # Float32 Grams of 3000 shifted rows: the bound is ~7e-4 of the variances (~1-25); the
  # unshifted estimate below is off by more than 1e-2 of them.
  shift = covariance.data_moments(x, batch_size=3000).shift
  ref_mean = x.astype(np.float64).mean(0)
  assert_close(cov, ref, _moment_tols(ref_mean, ref, len(x), shift, f32_len=3000)[1], "cov")
  # The same estimate without a shift (E[xx^T] - mm^T in float32 Grams) loses every digit.
  naive = (x.T @ x).astype(np.float64) / len(x) - np.outer(
    x.mean(0, dtype=np.float64), x.mean(0, dtype=np.float64)
  )
  assert np.abs(naive - ref).max() > 1e-2 * np.abs(ref).max()
  # Images with a large per-channel mean (e.g. unstandardized 0..255 pixels as float32).
  imgs = _images(40, 8, 8, 3, seed=5, mean=200.0, dtype=np.float32)
  for method in ("band", "patches"):
    _, pcov = covariance.patch_covariance(imgs, 3, batch_size=16, method=method)
    ref_m, ref_p = _reference(imgs, 3)
    shift = covariance.patch_moments(imgs, 3, batch_size=16, method=method).shift
    tol = _moment_tols(ref_m, ref_p, 40 * 36, shift, f32_len=16 * 36)[1]
    assert_close(pcov, ref_p, tol, method)


def test_data_covariance_flattens_trailing_axes():
  x = np.random.default_rng(6).standard_normal((50, 2, 3))
  mean, cov = covariance.data_covariance(x, batch_size=16)
  flat = x.reshape(50, -1)
  mean_tol, cov_tol = _moment_tols(
    flat.mean(0), np.cov(flat, rowvar=False), 50, covariance.data_moments(x, batch_size=16).shift
  )
  assert_close(mean, flat.mean(0), mean_tol, "mean")
  assert_close(cov, np.cov(flat, rowvar=False), cov_tol, "cov")


def test_weight_order_matches_patches():
  x = _images(1, 6, 7, 3, seed=7)
  k = 3
  patches = np.asarray(covariance.patches_np(x, k))
  chosen = [0, 5, 11]
  kernel = np.stack([patches[j].reshape(k, k, 3) for j in chosen], axis=-1)  # [k, k, C, F]
  samples = covariance.weight_samples(kernel)
  np.testing.assert_array_equal(samples, patches[chosen])
  # Seeds axis: [S, kh, kw, C, F] pools filters of every seed, seed-major.
  stacked = np.stack([kernel, 2 * kernel])
  np.testing.assert_array_equal(
    covariance.weight_samples(stacked), np.concatenate([patches[chosen], 2 * patches[chosen]])
  )


def test_weight_covariance_ranks_and_centering():
  rng = np.random.default_rng(8)
  dense = rng.standard_normal((3, 5, 40)) + 0.3  # [S, d, h]
  w = dense.transpose(0, 2, 1).reshape(-1, 5)
  # float64 Grams: bounded by |w|.T @ |w| / n (_gram_tol); a transposed axis gives O(1) errors.
  assert_close(covariance.weight_covariance(dense), w.T @ w / 120, _gram_tol(w), "dense")
  wm = w - w.mean(0)
  assert_close(
    covariance.weight_covariance(dense, centered=True),
    np.cov(w, rowvar=False),
    _gram_tol(wm) * 2 + _gram_tol(w),
    "centered",
  )  # two centerings of a mean ~0.3
  assert_close(
    covariance.weight_covariance(dense[0]),
    dense[0] @ dense[0].T / 40,
    _gram_tol(dense[0].T),
    "one seed",
  )
  conv = rng.standard_normal((2, 3, 3, 2, 10))  # [S, kh, kw, C, F]
  wc = conv.transpose(0, 4, 1, 2, 3).reshape(-1, 18)
  assert_close(covariance.weight_covariance(conv), wc.T @ wc / 20, _gram_tol(wc), "conv")
  assert_close(
    covariance.weight_covariance(conv[1]),
    wc[10:].T @ wc[10:] / 10,
    _gram_tol(wc[10:]),
    "conv, one seed",
  )


def test_bad_images_raise_clear_errors():
  x = _images(6, 6, 6, 3, dtype=np.float32)
  bad = x.copy()
  bad[2, 1, 1, 0] = np.nan
  with pytest.raises(errors.DataError, match="NaN or inf"):
    covariance.patch_covariance(bad, 3)
  late = x.copy()
  late[5, 0, 0, 2] = np.inf
  with pytest.raises(errors.DataError, match="NaN or inf"):
    covariance.patch_covariance(late, 3, batch_size=2)  # only the last batch is bad
  with pytest.raises(errors.DataError, match=r"\[N, H, W, C\]"):
    covariance.patch_covariance(x[0], 3)
  with pytest.raises(errors.DataError, match="larger than the images"):
    covariance.patch_covariance(x, 7)
  with pytest.raises(errors.ConfigError, match="k must be"):
    covariance.patch_covariance(x, 0)
  with pytest.raises(errors.DataError, match="astype"):
    covariance.patch_covariance((x * 40 + 100).astype(np.uint8), 3)
  with pytest.raises(errors.DataError, match="first batch had"):
    covariance.patch_covariance(iter([x, x[:, :5]]), 3)
  with pytest.raises(errors.DataError, match="no images"):
    covariance.patch_covariance(iter([]), 3)
  with pytest.raises(errors.DataError, match="larger than the images"):
    covariance.extract_patches(x, 7)
  with pytest.raises(errors.DataError, match="NaN or inf"):
    covariance.data_covariance(np.array([[1.0, np.nan], [2.0, 3.0]]))
  with pytest.raises(errors.DataError, match="more than ddof"):
    covariance.data_covariance(np.ones((1, 3)))


def test_bad_kernels_raise_clear_errors():
  with pytest.raises(errors.DataError, match="kernels must be"):
    covariance.weight_covariance(np.ones((3,)))
  with pytest.raises(errors.DataError, match="kernels must be"):
    covariance.weight_covariance(np.ones((1, 2, 3, 3, 3, 4)))
  k = np.ones((3, 3, 3, 4))
  k[0, 0, 0, 0] = np.nan
  with pytest.raises(errors.DataError, match="NaN or inf"):
    covariance.weight_covariance(k)


@pytest.mark.parametrize("method", ["band", "patches"])
def test_one_core_inline_path_equals_threaded_path(method, monkeypatch):
  x = _images(30, 9, 10, 3, seed=9, dtype=np.float32)
  threaded = covariance.patch_covariance(x, 3, batch_size=8, method=method)[1]
  monkeypatch.setattr(covariance.os, "sched_getaffinity", lambda _: {0}, raising=False)
  monkeypatch.setattr(covariance.os, "cpu_count", lambda: 1)
  with covariance.blas_threads() as threads:
    assert threads.workers == 1
  inline = covariance.patch_covariance(x, 3, batch_size=8, method=method)[1]
  # Other chunks per thread -> other float32 Gram blocks: each within the bound of the exact value.
  ref_mean, ref_cov = _reference(x, 3)
  shift = covariance.patch_moments(x, 3, batch_size=8, method=method).shift
  assert_close(
    inline, threaded, 2 * _moment_tols(ref_mean, ref_cov, 30 * 56, shift, f32_len=8 * 56)[1], method
  )


def test_auto_method_uses_band_for_small_images():
  assert covariance.resolve_method("auto", (32, 32, 3), 3) == "band"
  assert covariance.resolve_method("auto", (32, 32, 3), 5) == "band"
  assert covariance.resolve_method("auto", (224, 224, 3), 7) == "patches"
  with pytest.raises(errors.ConfigError, match="method must be"):
    covariance.resolve_method("fast", (8, 8, 3), 3)
