"""MNIST-format datasets (Fashion-MNIST, MNIST) from their original idx files, offline.

    from rl_align.data import idx
    folder = idx.find_folder("/usr/share/datasets/fashion-mnist")   # holds the four idx files?
    x, y = idx.read_split(folder, "train")        # uint8 [60000, 28, 28, 1], int32 [60000]
    images = idx.read_idx("t10k-images-idx3-ubyte.gz", ndim=3)   # any idx file, checked

An idx file (LeCun et al.'s MNIST format) is a 4-byte magic number (two zero bytes, the element
type 0x08 = uint8, the number of dimensions), one big-endian int32 size per dimension, then the
elements.  `read_idx` checks all three (magic, declared sizes, file length) and raises a
`DataError` that names the file when one is off; a gzip file that does not decompress is the same
error.  Where a dataset is looked for, in order (`rl_align.data.load("fashion_mnist")`):

1. `data_dir` (or $TFDS_DATA_DIR, else ~/tensorflow_datasets): the four idx files in it (or in
   its `fashion_mnist/` / `fashion-mnist/` subfolder), else a prepared tfds `fashion_mnist`;
2. the idx files of Debian's package `dataset-fashion-mnist` (`dpkg -L dataset-fashion-mnist`).

Files found are used or fail loudly: a corrupt file is never skipped for another copy.
"""

import functools
import gzip
import os
import subprocess
import zlib
from typing import Optional

import numpy as np

from rl_align import errors

# Split -> (images file, labels file), without the optional ".gz".
FILES = {
  "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
UBYTE = 0x08
# Datasets in this format, their class count, and the Debian package (and its folder) holding them.
DATASETS = {"fashion_mnist": 10, "mnist": 10}
DEBIAN = {"fashion_mnist": ("dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist")}


def _read_bytes(path: str) -> bytes:
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        return f.read()
    with open(path, "rb") as f:
      return f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise errors.DataError(
      f"idx file {path!r} cannot be read ({e}). Fix: replace the file with an intact copy "
      "(e.g. `apt-get install --reinstall dataset-fashion-mnist`)."
    ) from None


def read_idx(path: str, ndim: int) -> np.ndarray:
  """The uint8 array of an idx file (gzipped or not) with `ndim` dimensions, read-only.

  Raises DataError naming `path` when the magic number, the declared sizes or the file length
  are wrong (a truncated or corrupt file).
  """
  raw = _read_bytes(path)
  head = 4 + 4 * ndim
  if len(raw) < head:
    raise errors.DataError(
      f"idx file {path!r} is truncated: {len(raw)} bytes, shorter than its "
      f"{head}-byte header. Fix: replace it with an intact copy."
    )
  magic = raw[:4]
  if magic[:2] != b"\0\0" or magic[2] != UBYTE or magic[3] != ndim:
    raise errors.DataError(
      f"idx file {path!r} has magic number 0x{magic.hex()}, expected 0x0000{UBYTE:02x}{ndim:02x} "
      f"(uint8, {ndim} dimensions). Fix: it is not an idx{ndim}-ubyte file; replace it."
    )
  sizes = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
  if min(sizes) < 1:
    raise errors.DataError(
      f"idx file {path!r} declares sizes {sizes}. Fix: replace it with an intact copy."
    )
  want = head + int(np.prod(sizes, dtype=np.int64))
  if len(raw) != want:
    raise errors.DataError(
      f"idx file {path!r} has {len(raw)} bytes but its header declares sizes {sizes}, i.e. "
      f"{want} bytes ({'truncated' if len(raw) < want else 'trailing data'}). Fix: replace it "
      "with an intact copy."
    )
  return np.frombuffer(raw, np.uint8, offset=head).reshape(sizes)


def _file(folder: str, stem: str) -> Optional[str]:
  for name in (stem + ".gz", stem):
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return path
  return None


def find_folder(folder: str, name: str = "fashion_mnist") -> Optional[str]:
  """The folder holding `name`'s idx files: `folder` itself or its `name` / dashed subfolder.

  A folder counts when it holds any of the four files; `read_split` then names a missing one.
  """
  for cand in (folder, os.path.join(folder, name), os.path.join(folder, name.replace("_", "-"))):
    if any(_file(cand, stem) for pair in FILES.values() for stem in pair):
      return cand
  return None


@functools.lru_cache(maxsize=4)
def _read_split_cached(images: str, labels: str, stamp: tuple) -> tuple:
  del stamp  # part of the cache key only: a replaced file is read again
  x = read_idx(images, ndim=3)
  y = read_idx(labels, ndim=1)
  if len(x) != len(y):
    raise errors.DataError(
      f"idx files {images!r} ({len(x)} images) and {labels!r} ({len(y)} labels) disagree. "
      "Fix: use the images and labels files of one split of one dataset."
    )
  return x[..., None], y.astype(np.int32)


def read_split(folder: str, split: str, num_classes: int = 10) -> tuple:
  """(x uint8 [N, H, W, 1], y int32 [N]) of `split` ('train' or 'test') from the idx files in
  `folder`; cached per file (read-only arrays)."""
  if split not in FILES:
    raise errors.ConfigError(
      f"idx datasets have splits {tuple(FILES)}, got {split!r}. Fix: use "
      "one of them (carve validation sets with config.split)."
    )
  paths = []
  for stem in FILES[split]:
    path = _file(folder, stem)
    if path is None:
      raise errors.DataError(
        f"{folder!r} holds idx files but not {stem}(.gz). Fix: put all four files "
        f"({', '.join(s for pair in FILES.values() for s in pair)}, gzipped or not) there."
      )
    paths.append(path)
  stamp = tuple((os.path.getmtime(p), os.path.getsize(p)) for p in paths)
  x, y = _read_split_cached(paths[0], paths[1], stamp)
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise errors.DataError(
      f"idx file {paths[1]!r} has labels in [{y.min()}, {y.max()}], outside "
      f"[0, {num_classes}). Fix: replace it with an intact copy."
    )
  return x, y


def debian_folder(name: str) -> Optional[str]:
  """The folder of `name`'s idx files from its Debian package (`dpkg -L`), or None."""
  if name not in DEBIAN:
    return None
  package, default = DEBIAN[name]
  try:
    out = subprocess.run(
      ["dpkg", "-L", package], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    listed = [line for line in out.splitlines() if line.endswith(FILES["train"][0] + ".gz")]
  except (OSError, subprocess.SubprocessError):
    listed = []
  folder = os.path.dirname(listed[0]) if listed else default
  return find_folder(folder, name)


def how_to_get(name: str, looked_in) -> str:
  """The one-line 'not found' message: the folders looked in and the ways to get `name`."""
  ways = []
  if name in DEBIAN:
    ways.append(f"`apt-get install {DEBIAN[name][0]}` (the original idx files, offline)")
  ways.append(
    f"put the four idx files ({', '.join(FILES['train'] + FILES['test'])}, gzipped or "
    "not) in a folder and pass it as data_dir= / --config.data.data_dir= / "
    "TFDS_DATA_DIR"
  )
  ways.append(
    f"`tfds build {name} --data_dir=DIR --file_format=array_record` on a networked "
    "machine and copy DIR here"
  )
  return (
    f"dataset {name!r} was not found; looked in {'; '.join(looked_in)}. Fix: {'; or '.join(ways)}."
  )
