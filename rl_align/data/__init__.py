"""Data sources, standardization, splits and random labels.

Every source returns an :class:`ArrayDataset` (numpy float32 inputs, int32 labels) from `load`, or
streams the same rows as a :class:`Source` from `source`; one registry (`registry.REGISTRY`) serves
both.  Sources are EMBEDDED (offline: synthesized, or shipped with scikit-learn / scikit-image) or
REAL (read from disk: the idx files of Fashion-MNIST / MNIST, or a prepared
``tensorflow_datasets`` folder; downloaded only when asked, `download=True`)::

    from rl_align import data
    ds = data.load("gaussian", n=10_000, stds=[0.1 * i for i in range(1, 31)])
    ds = data.load("photos", n=20_000, split="train")        # 32x32 RGB crops of 10 real photos
    ds = data.load("fashion_mnist", split="train")           # 60000 x 28 x 28 x 1, real labels
    ds = data.load("cifar10", split="train", data_dir="~/tensorflow_datasets")

    idx = data.split_indices(len(ds), {"upstream": 20_000, "downstream": 25_000}, seed=0)
    up = ds.subset(idx["upstream"])
    up = up.with_labels(seeds.random_labels(1, [0], len(up), 10)[0], num_classes=10)
    mean, std = data.channel_stats(up.x)                      # float64, streamed over chunks
    x = data.standardize(up.x, mean, std)                     # float32

    src = data.source("imagenet", split="train", image_size=64)    # tfds imagenet_resized/64x64
    x, y = src.take([5, 2, 9])           # uint8 (or float32 when resized) [3, H, W, C], int32 [3]
    up = src.subset(idx["upstream"])     # a view, nothing read
    mean, std = data.channel_stats(up)   # streamed over chunks, same numbers as on the array
    data.choose_placement(len(up), up.example_shape, num_seeds=8, device_bytes=80 << 30)

Modules: `core` (containers), `embedded` (gaussian, digits, photos), `cache` (the disk cache of
the resized photos), `idx` (Fashion-MNIST / MNIST idx files), `tfds_source`, `resize`, `registry`
(load / source), `stats` (finite checks, channel statistics, standardization), `splits` (split
indices, random labels), `placement`.
"""

from rl_align.data.core import ArrayDataset
from rl_align.data.core import ArraySource
from rl_align.data.core import check_count
from rl_align.data.core import Source
from rl_align.data.core import SubsetSource
from rl_align.data.core import to_unit_float
from rl_align.data.embedded import digits
from rl_align.data.embedded import gaussian
from rl_align.data.embedded import gaussian_covariance
from rl_align.data.embedded import photo_cell_split
from rl_align.data.embedded import photo_crop_origins
from rl_align.data.embedded import PHOTO_NAMES
from rl_align.data.embedded import PhotoSource
from rl_align.data.embedded import photos
from rl_align.data.embedded import render_photo_crops
from rl_align.data.placement import check_placement
from rl_align.data.placement import choose_placement
from rl_align.data.placement import device_memory_bytes
from rl_align.data.placement import PLACEMENTS
from rl_align.data.registry import EMBEDDED
from rl_align.data.registry import load
from rl_align.data.registry import REAL
from rl_align.data.registry import source
from rl_align.data.registry import SOURCES
from rl_align.data.registry import split_kwargs
from rl_align.data.resize import resize_images
from rl_align.data.resize import square_resize
from rl_align.data.splits import split_indices
from rl_align.data.stats import channel_stats
from rl_align.data.stats import check_finite
from rl_align.data.stats import standardize
from rl_align.data.tfds_source import IMAGENET_SIZES
from rl_align.data.tfds_source import tfds_dataset
from rl_align.data.tfds_source import TfdsSource
