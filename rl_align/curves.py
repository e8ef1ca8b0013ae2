"""Training-curve summaries: logged metrics as curves, iterations to reach an accuracy, speed-ups,
and which seeds finished.

Usage::

    from rl_align import curves
    steps, c = curves.from_metrics(res.metrics, ["train_accuracy"], seeds=ids, phase="downstream")
    acc = c["train_accuracy"]                                # [S, T]
    it = curves.iterations_to_reach(steps, acc, 0.8)        # acc [S, T] -> [S] (inf if never)
    r = curves.speedup(steps, acc_scratch, acc_pretrained, 0.8)   # scratch iterations / arm iterations
    ok = curves.finished_seeds(res.diverged, len(acc))       # [S] bool: seeds that did not diverge

A seed that diverged (the engine froze it at a non-finite loss, `TrainResult.diverged`) keeps its
row in every per-seed array, but never enters a pooled statistic, a seed mean or a check.
"""

from typing import Any, Mapping, Sequence

import numpy as np

from rl_align import errors


def from_metrics(
  rows: Sequence[Mapping[str, Any]],
  keys: Sequence[str],
  *,
  seeds: Sequence[int] | None = None,
  phase: str | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """(steps [T], {key: [S, T]}) from engine metric rows (`TrainResult.metrics`, metrics.jsonl).

  Only rows that carry one of `keys` (and belong to engine phase `phase`, if given) count; `seeds`
  picks and orders the seed ids (default: all of them, ascending).  A missing or None value is nan.
  """
  keys = list(keys)
  rows = [
    r for r in rows if (phase is None or r.get("phase") == phase) and any(k in r for k in keys)
  ]
  steps = sorted({int(r["step"]) for r in rows})
  ids = sorted({int(r["seed"]) for r in rows}) if seeds is None else [int(s) for s in seeds]
  si, ti = {s: i for i, s in enumerate(ids)}, {t: i for i, t in enumerate(steps)}
  out = {k: np.full((len(ids), len(steps)), np.nan) for k in keys}
  for r in rows:
    i = si.get(int(r["seed"]))
    if i is None:
      continue
    for k in keys:
      if r.get(k) is not None:
        out[k][i, ti[int(r["step"])]] = float(r[k])
  return np.array(steps, dtype=np.int64), out


def finished_seeds(diverged, num_seeds: int) -> np.ndarray:
  """[S] bool: the seeds that finished training, i.e. not `diverged` ([S] flags; None: all)."""
  if diverged is None:
    return np.ones(num_seeds, bool)
  flags = np.asarray(diverged, bool).reshape(-1)
  if flags.shape != (num_seeds,):
    raise errors.DataError(
      f"diverged flags have shape {flags.shape}, expected ({num_seeds},) "
      "(one per seed). Fix: pass TrainResult.diverged of the same run."
    )
  return ~flags


def all_diverged(num_seeds: int, what: str = "seeds") -> str:
  """The message that replaces statistics when no seed finished."""
  return (
    f"all {num_seeds} {what} diverged (non-finite loss), so no statistic is reported. "
    "Fix: lower the learning rate (e.g. --config.train.learning_rate)."
  )


def seed_mean_std(a) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std over the seed axis 0; nan (without a warning) when there is no seed."""
  a = np.asarray(a, np.float64)
  if not len(a):
    return np.full(a.shape[1:], np.nan), np.full(a.shape[1:], np.nan)
  return a.mean(0), a.std(0)


def iterations_to_reach(steps, acc, threshold: float) -> np.ndarray:
  """First logged step at which each seed's accuracy reaches `threshold`, linearly interpolated
  between logged steps; inf where it never does.  steps [T], acc [S, T] (or [T]) -> [S]."""
  steps = np.asarray(steps, np.float64)
  acc = np.atleast_2d(np.asarray(acc, np.float64))
  out = np.full(acc.shape[0], np.inf)
  for s, a in enumerate(acc):
    hit = np.flatnonzero(a >= threshold)
    if hit.size == 0:
      continue
    j = hit[0]
    if j == 0:
      out[s] = steps[0]
    else:
      frac = (threshold - a[j - 1]) / max(a[j] - a[j - 1], 1e-12)
      out[s] = steps[j - 1] + frac * (steps[j] - steps[j - 1])
  return out


def speedup(steps, acc_reference, acc_arm, threshold: float) -> float:
  """Ratio of the mean iterations the reference (e.g. scratch) and the arm need to reach
  `threshold` (> 1: the arm is faster).  nan if either never reaches it (or has no seeds)."""
  if not np.size(acc_reference) or not np.size(acc_arm):
    return float("nan")
  ref = iterations_to_reach(steps, acc_reference, threshold).mean()
  arm = iterations_to_reach(steps, acc_arm, threshold).mean()
  if not (np.isfinite(ref) and np.isfinite(arm)) or arm <= 0:
    return float("nan")
  return float(ref / arm)
