"""Pieces shared by the figure configs."""

from rl_align import errors


# The embedded `photos` crops of the local CNN configs (Figs 2, 3, 4, 5): 16x16 crops of the photos
# resized to short side 128 (so a crop holds structure), cells of 24 px, fixed seed.
LOCAL_PHOTOS = {"size": 16, "short_side": 128, "cell": 24, "seed": 0}


def local_photos(n: int) -> dict:
  """config.data.kwargs of n local photo crops."""
  return dict(LOCAL_PHOTOS, n=n)


# Fashion-MNIST (real, offline: Debian's dataset-fashion-mnist, or idx files / a prepared tfds
# folder in data_dir): the `fmnist` variant of every CNN config.
def data_block(name: str, kwargs: dict | None = None, test_examples: int = 0) -> dict:
  """A config.data block (or f_only.data): source `name` with `kwargs`, standardized per channel,
  its "test" split as the test set (capped at test_examples; 0: all), data on the device."""
  return {
    "name": name,
    "kwargs": dict(kwargs or {}),
    "data_dir": "",
    "standardize": True,
    "test_split": "test",
    "test_examples": int(test_examples),
    "placement": "device",
  }


def fmnist_data(max_examples: int = 0) -> dict:
  """config.data of Fashion-MNIST's train split (its first max_examples images; 0: all 60000),
  standardized with its own statistics; test = the 10000 test images."""
  return data_block("fashion_mnist", {"max_examples": max_examples} if max_examples else {})


def check_fmnist_scale(fmnist: bool, scale: str) -> None:
  """fmnist sets its own sizes: it combines with the default scale (paper) or tiny only."""
  if fmnist and scale not in ("paper", "tiny"):
    raise errors.ConfigError(
      f"config argument fmnist goes with the default scale (its own sizes) or tiny, not "
      f"{scale!r}. Fix: drop {scale!r}."
    )
