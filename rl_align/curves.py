"""Training-curve summaries: iterations to reach an accuracy, and speed-up ratios.

Usage::

    from rl_align import curves
    it = curves.iterations_to_reach(steps, acc, 0.8)        # acc [S, T] -> [S] (inf if never)
    r = curves.speedup(steps, acc_scratch, acc_pretrained, 0.8)   # scratch iterations / arm iterations
"""
import numpy as np


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
  `threshold` (> 1: the arm is faster).  nan if either never reaches it."""
  ref = iterations_to_reach(steps, acc_reference, threshold).mean()
  arm = iterations_to_reach(steps, acc_arm, threshold).mean()
  if not (np.isfinite(ref) and np.isfinite(arm)) or arm <= 0:
    return float("nan")
  return float(ref / arm)
