"""Tests for rl_align.data: sources, splits, labels, statistics and their error messages.

pytest -q tests/test_data.py
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from rl_align import data
from tests.tolerances import assert_close, f32_tol, f64_tol, sampling_tol
from rl_align import errors


# ---------------------------------------------------------------------------- ArrayDataset


def test_array_dataset_coerces_and_validates():
  ds = data.ArrayDataset(np.zeros((4, 3), np.float64), np.array([0, 1, 2, 1]), 3, "toy")
  assert ds.x.dtype == np.float32 and ds.y.dtype == np.int32 and len(ds) == 4
  sub = ds.subset(np.array([3, 0]))
  np.testing.assert_array_equal(sub.y, [1, 0])
  relabeled = ds.with_labels(np.array([4, 4, 0, 0]), num_classes=5)
  assert relabeled.x is ds.x and relabeled.num_classes == 5
  with pytest.raises(errors.DataError, match="num_classes"):
    ds.with_labels(np.array([0, 1, 2, 3]), num_classes=3)
  with pytest.raises(errors.DataError, match="one integer label per example"):
    data.ArrayDataset(np.zeros((4, 3)), np.zeros(3, np.int32), 3, "toy")
  with pytest.raises(errors.DataError, match="integers"):
    data.ArrayDataset(np.zeros((2, 3)), np.zeros(2), 3, "toy")


# ---------------------------------------------------------------------------- gaussian


def test_gaussian_covariance_diag_and_rotation_preserves_spectrum():
  stds = np.array([0.5, 1.0, 1.5, 2.0, 3.0])
  # Exact: diag(stds**2) is computed the same way.
  np.testing.assert_array_equal(data.gaussian_covariance(stds), np.diag(stds**2))
  np.testing.assert_array_equal(data.gaussian_covariance(variances=stds**2), np.diag(stds**2))
  rot = data.gaussian_covariance(stds, rotate=True, seed=3)
  assert rot.dtype == np.float64
  np.testing.assert_array_equal(rot, rot.T)  # symmetrized: exact
  # O diag O^T then eigh, float64: normwise error <= 5-term sums and a backward stable eigh, both
  # of magnitude lam_max = 9 (tests/tolerances.py).
  np.testing.assert_allclose(
    np.linalg.eigvalsh(rot), np.sort(stds**2), rtol=0, atol=f64_tol(9.0, 5 * 5)
  )
  assert np.abs(rot - np.diag(np.diag(rot))).max() > 0.1  # really rotated
  np.testing.assert_array_equal(rot, data.gaussian_covariance(stds, rotate=True, seed=3))
  assert not np.allclose(rot, data.gaussian_covariance(stds, rotate=True, seed=4))


@pytest.mark.parametrize("rotate", [False, True])
def test_gaussian_sample_covariance_matches_population(rotate):
  stds = np.array([0.3, 0.8, 1.2, 1.9, 2.5, 3.0])
  ds = data.gaussian(40_000, stds=stds, rotate=rotate, seed=7, num_classes=4)
  assert ds.x.shape == (40_000, 6) and ds.x.dtype == np.float32
  x = ds.x.astype(np.float64)
  pop = data.gaussian_covariance(stds, rotate=rotate, seed=7)
  # Sampling bounds, 5 sigma (tests/tolerances.py): the mean of coordinate i has std
  # sqrt(S_ii / n); entry (i, j) of a Gaussian sample covariance has std sqrt((S_ii S_jj + S_ij^2)
  # / n) (<= 9 / 200 here); an eigenvalue of it has relative std sqrt(2 / n).
  n, var = len(x), np.diag(pop)
  assert_close(x.mean(0), 0, sampling_tol(np.sqrt(var), n), "sample mean")
  cov_tol = sampling_tol(np.sqrt(np.outer(var, var) + pop**2), n)
  assert_close(np.cov(x.T), pop, cov_tol, "sample covariance")
  np.testing.assert_allclose(
    np.linalg.eigvalsh(np.cov(x.T)), stds**2, rtol=sampling_tol(np.sqrt(2), n)
  )
  assert set(np.unique(ds.y)) == {0, 1, 2, 3}
  again = data.gaussian(40_000, stds=stds, rotate=rotate, seed=7, num_classes=4)
  np.testing.assert_array_equal(ds.x, again.x)
  np.testing.assert_array_equal(ds.y, again.y)
  test = data.gaussian(40_000, stds=stds, rotate=rotate, seed=7, num_classes=4, split="test")
  assert np.abs(test.x[:100] - ds.x[:100]).min() > 0  # an independent draw ...
  assert_close(np.cov(test.x.T.astype(np.float64)), pop, cov_tol, "test split")  # ... same Σ


def test_gaussian_needs_exactly_one_of_stds_variances():
  with pytest.raises(errors.ConfigError, match="exactly one"):
    data.gaussian(10)
  with pytest.raises(errors.ConfigError, match="exactly one"):
    data.gaussian_covariance(stds=[1.0], variances=[1.0])
  with pytest.raises(errors.ConfigError, match=">= 0"):
    data.gaussian(10, stds=[1.0, -1.0])


# ---------------------------------------------------------------------------- digits, photos


def test_digits():
  ds = data.digits()
  assert ds.x.shape == (1797, 8, 8, 1) and ds.x.dtype == np.float32
  assert ds.x.min() == 0.0 and ds.x.max() == 1.0
  np.testing.assert_array_equal(np.unique(ds.y), np.arange(10))


def test_photos_shape_determinism_and_balance():
  ds = data.photos(1003, seed=5)
  assert ds.x.shape == (1003, 32, 32, 3) and ds.x.dtype == np.float32
  assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0 and ds.x.std() > 0.1
  counts = np.bincount(ds.y, minlength=10)
  assert counts.max() - counts.min() <= 1 and counts.sum() == 1003
  np.testing.assert_array_equal(ds.x, data.photos(1003, seed=5).x)
  assert not np.array_equal(ds.x, data.photos(1003, seed=6).x)
  small = data.photos(30, size=16, num_classes=3)
  assert small.x.shape == (30, 16, 16, 3) and set(small.y.tolist()) == {0, 1, 2}


def test_photo_crops_render_their_origins():
  origins = data.photo_crop_origins(50, size=8, seed=2)
  crops = data.render_photo_crops(origins, size=8)
  stack, _ = data.embedded.photo_stack(256)
  assert origins[:, 3].min() == 0 and origins[:, 3].max() == 1  # both orientations occur
  for (p, top, left, flip), crop in zip(origins, crops):
    expect = stack[p, top : top + 8, left : left + 8].astype(np.float32) / 255
    # float32 x (1/255) vs float32 / 255: two roundings of values <= 1.
    np.testing.assert_allclose(
      crop, expect[:, ::-1] if flip else expect, rtol=0, atol=f32_tol(1.0, 2)
    )


def _overlap(a: np.ndarray, sa: int, b: np.ndarray, sb: int) -> int:
  """Number of (crop of a, crop of b) pairs from the same photo whose pixel squares intersect."""
  same = a[:, None, 0] == b[None, :, 0]
  rows = (a[:, None, 1] < b[None, :, 1] + sb) & (b[None, :, 1] < a[:, None, 1] + sa)
  cols = (a[:, None, 2] < b[None, :, 2] + sb) & (b[None, :, 2] < a[:, None, 2] + sa)
  return int((same & rows & cols).sum())


def test_photo_splits_share_no_pixel():
  train = data.photo_crop_origins(1500, split="train", seed=0)
  test = data.photo_crop_origins(1500, size=16, split="test", seed=1)
  val = data.photo_crop_origins(600, split="val", seed=0)
  assert _overlap(train, 32, test, 16) == 0
  assert _overlap(train, 32, val, 32) == 0
  assert _overlap(val, 32, test, 16) == 0
  assert _overlap(train, 32, train, 32) > 1500  # the check detects overlap when there is one
  for origins, split, size in [(train, "train", 32), (test, "test", 16), (val, "val", 32)]:
    ci, cj = origins[:, 1] // 48, origins[:, 2] // 48
    np.testing.assert_array_equal((origins[:, 1] + size - 1) // 48, ci)  # inside one cell
    np.testing.assert_array_equal((origins[:, 2] + size - 1) // 48, cj)
    assert set(data.photo_cell_split(ci, cj).tolist()) == {split}


def test_photos_task_is_learnable_but_not_trivial():
  train, test = data.photos(3000, split="train"), data.photos(1000, split="test")
  feats = lambda ds: ds.x.mean(axis=(1, 2))  # mean colour: a weak but real cue
  centroids = np.stack([feats(train)[train.y == k].mean(0) for k in range(10)])
  pred = ((feats(test)[:, None] - centroids) ** 2).sum(-1).argmin(1)
  # Measured 0.387 (chance 0.1); over 1000 test crops the accuracy has sampling std <= 0.016, so
  # each bound is > 8 std away: it fails only if the cue is lost or the task becomes trivial.
  assert 0.25 < (pred == test.y).mean() < 0.8


def test_photos_errors():
  with pytest.raises(errors.ConfigError, match="only 10 offline photos"):
    data.photos(10, num_classes=11)
  with pytest.raises(errors.ConfigError, match="unknown split"):
    data.photos(10, split="validation")
  with pytest.raises(errors.ConfigError, match="cell"):
    data.photos(10, size=64)


# ---------------------------------------------------------------------------- tfds


def test_tfds_cifar10_and_mnist_with_mock_data(tmp_path):
  (tmp_path / "mnist").mkdir()  # mnist is read through tfds where data_dir has a mnist/ folder
  with tfds.testing.mock_data(num_examples=12):
    cifar = data.load("cifar10", split="train")
    mnist = data.load("mnist", split="test", max_examples=5, data_dir=str(tmp_path))
    small = data.load("mnist", split="train", image_size=16, data_dir=str(tmp_path))
  assert cifar.x.shape == (12, 32, 32, 3) and cifar.x.dtype == np.float32
  assert cifar.y.dtype == np.int32 and cifar.num_classes == 10
  assert 0 <= cifar.y.min() and cifar.y.max() < 10
  assert 0.0 <= cifar.x.min() and cifar.x.max() <= 1.0 and cifar.x.max() > 0.5
  assert mnist.x.shape == (5, 28, 28, 1)  # grayscale keeps C=1, truncated to max_examples
  assert small.x.shape == (12, 16, 16, 1) and 0.0 <= small.x.min() and small.x.max() <= 1.0


def test_resize_images():
  x = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1) / 32
  out = data.resize_images(x, 2)  # integer factor: exact block average
  # float32 means of 4 values <= 1 in any order (tests/tolerances.py).
  np.testing.assert_allclose(
    out, x.reshape(2, 2, 2, 2, 2, 1).mean(axis=(2, 4)), rtol=0, atol=f32_tol(1.0, 4)
  )
  u8 = np.full((3, 28, 28, 1), 255, np.uint8)
  up = data.resize_images(u8, 32)  # non-integer factor: bilinear, uint8 -> [0, 1]
  assert up.shape == (3, 32, 32, 1) and up.dtype == np.float32
  # Separable float32 filter with weights summing to 1 (<= 4 taps per axis) on 1.0, then / 255.
  np.testing.assert_allclose(up, 1.0, rtol=0, atol=f32_tol(1.0, 4 + 4 + 2))


def test_missing_tfds_dataset_names_fix(tmp_path, monkeypatch):
  with pytest.raises(errors.DatasetNotFoundError) as info:
    data.load("cifar10", data_dir=str(tmp_path))
  msg = str(info.value)
  assert "'cifar10'" in msg and str(tmp_path) in msg and "tfds build cifar10" in msg
  assert "photos" in msg
  assert not list(tmp_path.iterdir())  # nothing was downloaded or created
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
  with pytest.raises(errors.DatasetNotFoundError, match="env"):
    data.tfds_dataset("mnist", "train")


def test_load_errors():
  with pytest.raises(errors.ConfigError) as info:
    data.load("cifar11")
  assert all(name in str(info.value) for name in data.SOURCES)
  with pytest.raises(errors.ConfigError, match="only its keyword arguments"):
    data.load("photos", n=10, colour=True)
  with pytest.raises(errors.ConfigError, match="8, 16, 32, 64"):
    data.load("imagenet", image_size=24)
  assert set(data.SOURCES) == set(data.EMBEDDED) | set(data.REAL)
  ds = data.load("gaussian", n=5, stds=[1.0, 2.0])
  assert ds.x.shape == (5, 2)


# ---------------------------------------------------------------------------- checks and stats


def test_check_finite_reports_count_and_place():
  x = np.zeros((6, 4, 4, 3), np.float32)
  data.check_finite(x)
  x[2, 0, 0, 0] = np.nan
  x[4, 1, 1, 1] = np.inf
  x[4, 1, 1, 2] = np.nan
  with pytest.raises(errors.DataError) as info:
    data.check_finite(x, "images")
  msg = str(info.value)
  assert "2 NaN and 1 inf" in msg and "2 of 6 examples" in msg and "[2, 4]" in msg
  assert "images[2]" in msg


def test_channel_stats_streams_and_standardize(monkeypatch):
  rng = np.random.default_rng(0)
  x = (1000 + rng.normal(size=(300, 5, 5, 3)) * [1.0, 2.0, 0.5]).astype(np.float32)
  monkeypatch.setattr(data.stats, "CHUNK_BYTES", 8 * 75 * 7)  # 7 examples per chunk: many merges
  mean, std = data.channel_stats(x)
  flat = x.reshape(-1, 3).astype(np.float64)
  assert mean.dtype == np.float64
  # float64 sums over the 7500 values of a channel (tests/tolerances.py): the mean's terms are
  # ~1000; the squares are of deviations from a chunk mean, so the variance (and the std, at half
  # the relative error) is bounded relative to itself.
  assert_close(mean, flat.mean(0), f64_tol(np.abs(flat).mean(0), len(flat)), "mean")
  np.testing.assert_allclose(std, flat.std(0), rtol=f64_tol(1.0, len(flat)))
  z = data.standardize(x, mean, std)
  assert z.dtype == np.float32 and z.shape == x.shape
  # float32: the mean rounded to float32 shifts z by <= u |mean| / std; z itself rounds once or
  # twice.  The statistics of z are taken in float64, so they add nothing.
  z64 = z.reshape(-1, 3).astype(np.float64)
  assert_close(z64.mean(0), 0, f32_tol(np.abs(mean) / std + np.abs(z64).max(), 2), "mean of z")
  np.testing.assert_allclose(z64.std(0), 1, rtol=0, atol=f32_tol(1.0, 3))


def test_standardize_errors():
  x = np.ones((4, 3), np.float32)
  with pytest.raises(errors.DataError, match="channel 1 is constant"):
    data.standardize(x, np.zeros(3), np.array([1.0, 0.0, 1.0]))
  with pytest.raises(errors.DataError, match="3 channels"):
    data.standardize(x, np.zeros(2), np.ones(2))


# ---------------------------------------------------------------------------- splits and labels


def test_split_indices_disjoint_covering_deterministic():
  sizes = {"upstream": 40, "downstream": 50, "test": 10}
  parts = data.split_indices(100, sizes, seed=3)
  assert list(parts) == list(sizes) and [len(v) for v in parts.values()] == [40, 50, 10]
  union = np.concatenate(list(parts.values()))
  np.testing.assert_array_equal(np.sort(union), np.arange(100))  # disjoint and covering
  again = data.split_indices(100, sizes, seed=3)
  assert all(np.array_equal(parts[k], again[k]) for k in sizes)
  other = data.split_indices(100, sizes, seed=4)
  assert not np.array_equal(parts["upstream"], other["upstream"])
  # One permutation: a shorter first split is a prefix of the longer one.
  np.testing.assert_array_equal(
    data.split_indices(100, {"a": 20}, seed=3)["a"], parts["upstream"][:20]
  )
  with pytest.raises(errors.ConfigError, match="sum to 101 > 100"):
    data.split_indices(100, {"a": 60, "b": 41}, seed=0)
  with pytest.raises(errors.ConfigError, match="'b'"):
    data.split_indices(100, {"a": 60, "b": -1}, seed=0)


def test_random_labels_uniform_deterministic_independent():
  """`seeds.random_labels`, the one label draw: uniform, the same for the same root and seed id,
  independent across seed ids; a bad class count is one ConfigError."""
  from rl_align import seeds  # pylint: disable=g-import-not-at-top

  n, k = 50_000, 10
  y = seeds.random_labels(0, [0], n, k)[0]
  assert y.dtype == np.int32 and y.shape == (n,) and y.min() == 0 and y.max() == k - 1
  counts = np.bincount(y, minlength=k)
  # Sampling bound: a count is Binomial(n, 1/k), std sqrt(n (1/k)(1 - 1/k)); 5 sigma.
  assert np.abs(counts - n / k).max() < sampling_tol(np.sqrt(n * (1 / k) * (1 - 1 / k)), 1)
  np.testing.assert_array_equal(y, seeds.random_labels(0, [3, 0], n, k)[1])
  z = seeds.random_labels(0, [1], n, k)[0]
  # Different seed ids: agreement at chance level, a mean of n Bernoulli(1/k): 5 sigma = 0.0067.
  assert abs((y == z).mean() - 1 / k) < sampling_tol(np.sqrt((1 / k) * (1 - 1 / k)), n)
  with pytest.raises(errors.ConfigError, match="num_classes"):
    seeds.random_labels(0, [0], 10, 0)


def test_photo_stack_is_kept_on_disk_and_read_back_bitwise(tmp_path, monkeypatch):
  """The disk cache (rl_align/data/cache.py) returns exactly what decoding and resizing give; a
  damaged entry is derived again; RL_ALIGN_CACHE_DIR="" turns it off."""
  from rl_align.data import cache, embedded  # pylint: disable=g-import-not-at-top

  monkeypatch.setenv(cache.ENV, str(tmp_path))
  embedded.photo_stack.cache_clear()
  derived = embedded._resized_photos(64)  # pylint: disable=protected-access
  stack, shapes = embedded.photo_stack(64)  # derived, then written
  files = list(tmp_path.glob("photos_*.npz"))
  assert len(files) == 1
  np.testing.assert_array_equal(stack, derived["stack"])
  assert shapes == tuple(map(tuple, derived["shapes"].tolist())) and min(shapes[0]) == 64
  calls = []
  monkeypatch.setattr(embedded, "_resized_photos", lambda s: calls.append(s) or derived)
  embedded.photo_stack.cache_clear()
  again, _ = embedded.photo_stack(64)  # read back: nothing derived
  assert calls == [] and again.dtype == np.uint8 and not again.flags.writeable
  np.testing.assert_array_equal(again, derived["stack"])
  files[0].write_bytes(b"cut short")  # e.g. a crash while another process wrote it
  embedded.photo_stack.cache_clear()
  np.testing.assert_array_equal(embedded.photo_stack(64)[0], derived["stack"])
  assert calls == [64] and len(np.load(files[0]).files) == 2  # rewritten whole
  monkeypatch.setenv(cache.ENV, "")
  assert cache.path("photos", {}) is None
  embedded.photo_stack.cache_clear()
