"""Accuracy of every member of a trained phase, on arrays or on a split (`rl_align.inputs`).

    from rl_align.runners import evaluation
    evaluation.split_accuracy(model, res.params, data.parts["test"])       # [S] on its own labels
    steps, acc = evaluation.accuracy_curve(model, init, res, x0, y0, phase="downstream")

Inputs are padded to whole batches, so every batch of a call runs one compiled program; a split is
read batch by batch (`Split.examples`), once for all members.
"""

import functools
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from rl_align import curves
from rl_align import inputs
from rl_align import train


@functools.lru_cache(maxsize=16)
def _predict(model):
  """The jitted argmax prediction of `model` (flax modules hash by their fields): compiled once
  per model and batch shape, not once per call."""
  return jax.jit(lambda p, xb: jnp.argmax(model.apply({"params": p}, xb), -1))


def _count(model, stacked_params, batches: Iterable, n: int, bs: int) -> np.ndarray:
  """[S] correct predictions over (x batch, labels [S, k] or [k]) batches, each padded to bs."""
  fn = _predict(model)
  s = jax.tree.leaves(stacked_params)[0].shape[0]
  members = [jax.tree.map(lambda a, i=i: a[i], stacked_params) for i in range(s)]
  correct = np.zeros(s, np.int64)
  for xb, yb in batches:
    k = len(xb)
    if k < bs:
      xb = np.concatenate([xb, np.zeros((bs - k,) + xb.shape[1:], xb.dtype)])
    want = np.broadcast_to(np.asarray(yb), (s, k))
    for i, p in enumerate(members):
      correct[i] += int(np.sum(np.asarray(fn(p, xb))[:k] == want[i]))
  return correct / n if n else np.zeros(s)


def accuracy(model, stacked_params, x, y, batch_size: int = 512) -> np.ndarray:
  """[S] accuracy of each member's params on arrays (x [E, ...], y [E] or per member [S, E])."""
  n = len(x)
  bs = max(1, min(batch_size, n))
  y = np.asarray(y)
  batches = ((x[j : j + bs], y[..., j : j + bs]) for j in range(0, n, bs))
  return _count(model, stacked_params, batches, n, bs)


def split_accuracy(model, stacked_params, part: inputs.Split, batch_size: int = 512) -> np.ndarray:
  """[S] accuracy of each member's params on a split, with its own labels."""
  n = len(part)
  bs = max(1, min(batch_size, n))
  return _count(model, stacked_params, part.examples(bs), n, bs)


def accuracy_curve(
  model, init, res: train.TrainResult, x, y, *, phase: str, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
  """(steps [T + 1], train accuracy [S, T + 1]) of an engine phase started from `init`: step 0 is
  measured on init over (x, y), the phase's train-eval examples, then come the engine's values."""
  acc0 = accuracy(model, init, x, y, batch_size)
  steps, logged = curves.from_metrics(
    res.metrics, ["train_accuracy"], seeds=res.seed_ids, phase=phase
  )
  return (
    np.concatenate([[0], steps]),
    np.concatenate([acc0[:, None], logged["train_accuracy"]], axis=1),
  )
