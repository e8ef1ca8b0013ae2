"""Small Fashion-MNIST-format idx files for tests (the real ones need a Debian package).

folder = fake_idx.write(tmp_path, n_train=256, n_test=64)   # the four .gz files
--config.data.data_dir=<folder>                             # any fmnist config reads them
"""

import gzip
import os
import struct

import numpy as np

STEMS = {
  "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(a: np.ndarray) -> bytes:
  """The idx encoding of a uint8 array: magic 0x0000 08 ndim, big-endian sizes, the elements."""
  a = np.ascontiguousarray(a, np.uint8)
  return bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}i", *a.shape) + a.tobytes()


def write_file(path: str, payload: bytes) -> str:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(payload)
  return path


def images(n: int, seed: int, size: int = 28, num_classes: int = 10) -> tuple:
  """(uint8 [n, size, size], uint8 [n]): a per-class blob pattern plus noise, learnable."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size] / size
  templates = np.stack(
    [np.sin((k + 1) * 3 * xx + k) * np.cos((k % 3 + 1) * 4 * yy) for k in range(num_classes)]
  )
  y = rng.integers(0, num_classes, n).astype(np.uint8)
  x = 128 + 80 * templates[y] + rng.normal(0, 30, (n, size, size))
  return np.clip(x, 0, 255).astype(np.uint8), y


def write(
  folder, n_train: int = 256, n_test: int = 64, seed: int = 0, gz: bool = True, size: int = 28
) -> str:
  """Writes the four idx files of a small fake Fashion-MNIST into `folder`; returns it."""
  folder = os.fspath(folder)
  os.makedirs(folder, exist_ok=True)
  for split, n in (("train", n_train), ("test", n_test)):
    x, y = images(n, seed + (split == "test"), size)
    ext = ".gz" if gz else ""
    write_file(os.path.join(folder, STEMS[split][0] + ext), idx_bytes(x))
    write_file(os.path.join(folder, STEMS[split][1] + ext), idx_bytes(y))
  return folder
