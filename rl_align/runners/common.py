"""Pieces every experiment runner shares: config -> data splits and labels.

    from rl_align.runners import common
    ds = common.load_split(config.data, "train")
    x_train, x_test = common.standardize_like(ds.x, test.x)
    labels = common.make_labels(config, ds)      # [S, N] random labels or [N] real ones
"""
import numpy as np

from rl_align import data as data_lib
from rl_align import errors
from rl_align import train


def source_kwargs(dcfg) -> dict:
  """config.data.kwargs as keyword arguments of `data.load` (lists become tuples)."""
  kw = dict(dcfg.get("kwargs", {}))
  return {k: (tuple(v) if isinstance(v, list) else v) for k, v in kw.items()}


def load_split(dcfg, split: str) -> data_lib.ArrayDataset:
  """One split of config.data: embedded sources take split as a keyword, tfds as a split name."""
  name = dcfg.name
  kw = source_kwargs(dcfg)
  if name in ("gaussian", "photos"):
    return data_lib.load(name, split=split, **kw)
  if name == "digits":
    return data_lib.load(name, **kw)
  return data_lib.load(name, split=split, data_dir=dcfg.get("data_dir") or None, **kw)


def standardize_like(train_x: np.ndarray, *others: np.ndarray):
  """Per-channel standardization with the statistics of train_x, applied to all arrays."""
  mean, std = data_lib.channel_stats(train_x)
  return tuple(data_lib.standardize(a, mean, std) for a in (train_x,) + others)


def make_labels(config, ds: data_lib.ArrayDataset) -> np.ndarray:
  """[S, N] per-seed random labels (config.labels == 'random') or the real labels [N]."""
  if config.labels == "random":
    return train.random_labels(config.train.seed, train.seed_ids(config.train), len(ds),
                               config.num_classes)
  if config.labels == "real":
    return ds.y.astype(np.int32)
  raise errors.ConfigError(f"config.labels must be 'random' or 'real', got {config.labels!r}.")
