"""Fashion-MNIST / MNIST from idx files: the reader, every error case, where a dataset is found.

All but one test write their own small idx files (tests/fake_idx.py); the last compares against the
real files of Debian's package `dataset-fashion-mnist` when it is installed.
"""

import gzip
import os

import numpy as np
import pytest

from rl_align import data
from rl_align import errors
from rl_align.data import idx
from tests import fake_idx
from tests.tolerances import f32_tol


@pytest.fixture
def no_debian(monkeypatch):
  """As on a machine without the Debian package."""
  monkeypatch.setattr(idx, "debian_folder", lambda name: None)
  monkeypatch.delenv("TFDS_DATA_DIR", raising=False)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
  a = np.random.default_rng(0).integers(0, 256, (7, 5, 3)).astype(np.uint8)
  path = fake_idx.write_file(
    str(tmp_path / ("a.idx" + (".gz" if gz else ""))), fake_idx.idx_bytes(a)
  )
  np.testing.assert_array_equal(idx.read_idx(path, ndim=3), a)


@pytest.mark.parametrize(
  "case, match",
  [
    ("magic", "magic number 0x00000903"),
    ("ndim", "magic number 0x00000802"),
    ("truncated", "truncated"),
    ("trailing", "trailing data"),
    ("header", "shorter than its 16-byte header"),
    ("zero", "declares sizes"),
    ("gzip", "cannot be read"),
  ],
)
def test_read_idx_rejects_a_corrupt_file_naming_it(tmp_path, case, match):
  good = fake_idx.idx_bytes(np.zeros((4, 3, 2), np.uint8))
  payload = {
    "magic": b"\0\0\x09\x03" + good[4:],
    "ndim": fake_idx.idx_bytes(np.zeros((4, 6), np.uint8)),
    "truncated": good[:-5],
    "trailing": good + b"\0",
    "header": good[:9],
    "zero": fake_idx.idx_bytes(np.zeros((0, 3, 2), np.uint8)),
    "gzip": None,
  }[case]
  path = str(tmp_path / "images.gz")
  if payload is None:
    with open(path, "wb") as f:
      f.write(gzip.compress(good)[:-12])  # a cut gzip stream
  else:
    fake_idx.write_file(path, payload)
  with pytest.raises(errors.DataError, match=match) as info:
    idx.read_idx(path, ndim=3)
  assert path in str(info.value) and "Fix:" in str(info.value)


def test_split_errors(tmp_path):
  folder = fake_idx.write(tmp_path / "a", n_train=10, n_test=4)
  os.remove(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"))
  with pytest.raises(errors.DataError, match="not t10k-labels-idx1-ubyte"):
    idx.read_split(folder, "test")
  with pytest.raises(errors.ConfigError, match="splits"):
    idx.read_split(folder, "validation")
  x, _ = fake_idx.images(10, 0)
  fake_idx.write_file(
    os.path.join(folder, "train-labels-idx1-ubyte.gz"), fake_idx.idx_bytes(np.zeros(9, np.uint8))
  )
  with pytest.raises(errors.DataError, match="10 images.*9 labels"):
    idx.read_split(folder, "train")
  fake_idx.write_file(
    os.path.join(folder, "train-labels-idx1-ubyte.gz"),
    fake_idx.idx_bytes(np.full(10, 12, np.uint8)),
  )
  with pytest.raises(errors.DataError, match=r"labels in \[12, 12\]"):
    idx.read_split(folder, "train")
  del x


def test_load_and_source_read_the_idx_files_in_data_dir(tmp_path, no_debian):
  folder = fake_idx.write(tmp_path / "fm", n_train=40, n_test=12, gz=False)
  want_x, want_y = fake_idx.images(40, 0)
  ds = data.load("fashion_mnist", split="train", data_dir=folder)
  assert ds.x.shape == (40, 28, 28, 1) and ds.x.dtype == np.float32 and ds.num_classes == 10
  np.testing.assert_array_equal(ds.x[..., 0], want_x.astype(np.float32) * np.float32(1 / 255))
  np.testing.assert_array_equal(ds.y, want_y)
  src = data.source("fashion_mnist", split="train", data_dir=folder)
  x, y = src.take([3, 0, 39])
  assert x.dtype == np.uint8
  np.testing.assert_array_equal(data.to_unit_float(x), ds.x[[3, 0, 39]])
  np.testing.assert_array_equal(y, ds.y[[3, 0, 39]])
  assert len(data.load("fashion_mnist", split="test", data_dir=folder)) == 12
  assert len(data.source("fashion_mnist", split="train", data_dir=folder, max_examples=7)) == 7
  small = data.load("mnist", split="train", data_dir=folder, image_size=14)  # same code, any name
  np.testing.assert_allclose(
    small.x, ds.x.reshape(40, 14, 2, 14, 2, 1).mean(axis=(2, 4)), rtol=0, atol=f32_tol(1.0, 4)
  )  # float32 means of 4 values <= 1
  # A subfolder named after the dataset, and TFDS_DATA_DIR, are searched too.
  fake_idx.write(tmp_path / "root" / "fashion_mnist", n_train=6, n_test=2)
  assert len(data.load("fashion_mnist", data_dir=str(tmp_path / "root"))) == 6
  os.environ["TFDS_DATA_DIR"] = str(tmp_path / "root")
  try:
    assert len(data.load("fashion_mnist", split="test")) == 2
  finally:
    del os.environ["TFDS_DATA_DIR"]


def test_missing_dataset_is_one_line_naming_folders_and_both_fixes(tmp_path, no_debian):
  with pytest.raises(errors.DatasetNotFoundError) as info:
    data.load("fashion_mnist", data_dir=str(tmp_path))
  msg = str(info.value)
  assert "\n" not in msg and "'fashion_mnist'" in msg and str(tmp_path) in msg
  assert "apt-get install dataset-fashion-mnist" in msg and "tfds build fashion_mnist" in msg
  assert "/usr/share/datasets/fashion-mnist" in msg
  assert not list(tmp_path.iterdir())  # nothing created


def test_debian_copy_is_the_fallback_and_a_corrupt_file_is_never_skipped(tmp_path, monkeypatch):
  deb = fake_idx.write(tmp_path / "deb", n_train=9, n_test=3)
  monkeypatch.setattr(idx, "debian_folder", lambda name: deb if name == "fashion_mnist" else None)
  assert len(data.load("fashion_mnist", data_dir=str(tmp_path / "empty"))) == 9
  bad = fake_idx.write(tmp_path / "bad", n_train=5, n_test=3)
  path = os.path.join(bad, "train-images-idx3-ubyte.gz")
  with gzip.open(path, "rb") as f:
    raw = f.read()
  fake_idx.write_file(path, raw[:-100])
  with pytest.raises(errors.DataError, match="train-images-idx3-ubyte.gz.*truncated"):
    data.load("fashion_mnist", data_dir=bad)


DEBIAN_FOLDER = idx.debian_folder("fashion_mnist")


@pytest.mark.skipif(
  DEBIAN_FOLDER is None,
  reason="needs Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)
def test_the_real_fashion_mnist_files():
  train = data.source("fashion_mnist", split="train", data_dir="/nonexistent")
  test = data.load("fashion_mnist", split="test", data_dir="/nonexistent")
  assert len(train) == 60_000 and train.example_shape == (28, 28, 1) and train.dtype == np.uint8
  assert test.x.shape == (10_000, 28, 28, 1)
  # Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
  np.testing.assert_array_equal(np.bincount(train.take(np.arange(60_000))[1]), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(test.y), [1000] * 10)
  # Its README's first test labels: ankle boot, pullover, trouser, trouser, shirt.
  np.testing.assert_array_equal(test.y[:5], [9, 2, 1, 1, 6])
  assert 0.27 < test.x.mean() < 0.30  # mean pixel ~0.286 (72.9 / 255)
