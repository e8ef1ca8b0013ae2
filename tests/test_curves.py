import numpy as np
import pytest

from rl_align import curves, errors
from tests.tolerances import f64_tol

# float64 interpolation and ratios of a few hand-made values: a few roundings (tests/tolerances.py).
_FEW = float(f64_tol(1.0, 8))


def test_iterations_to_reach_interpolates_and_flags_never():
  steps = [0, 100, 200, 300]
  acc = np.array(
    [
      [0.1, 0.5, 0.9, 1.0],  # crosses 0.7 halfway between 100 and 200
      [0.1, 0.2, 0.3, 0.4],
    ]
  )  # never reaches 0.7
  it = curves.iterations_to_reach(steps, acc, 0.7)
  assert it[0] == pytest.approx(150.0, rel=_FEW) and np.isinf(it[1])


def test_speedup_is_ratio_of_mean_iterations():
  steps = np.arange(0, 1001, 100)
  slow = np.clip(steps / 1000, 0, 1)[None]  # reaches 0.5 at 500
  fast = np.clip(steps / 500, 0, 1)[None]  # reaches 0.5 at 250
  assert curves.speedup(steps, slow, fast, 0.5) == pytest.approx(2.0, rel=_FEW)
  assert curves.speedup(steps, fast, slow, 0.5) == pytest.approx(0.5, rel=_FEW)
  assert np.isnan(curves.speedup(steps, slow * 0.1, fast, 0.5))


def test_from_metrics_orders_seeds_filters_the_phase_and_keeps_gaps_as_nan():
  rows = [
    {"phase": "up", "step": 5, "seed": 1, "acc": 0.5},
    {"phase": "up", "step": 5, "seed": 0, "acc": 0.4, "loss": 2.0},
    {"phase": "up", "step": 10, "seed": 0, "acc": None},  # non-finite, read back
    {"phase": "down", "step": 7, "seed": 0, "acc": 0.9},
  ]
  steps, c = curves.from_metrics(rows, ["acc"], seeds=[1, 0], phase="up")
  assert steps.tolist() == [5, 10]
  np.testing.assert_array_equal(c["acc"], [[0.5, np.nan], [0.4, np.nan]])
  steps, c = curves.from_metrics(rows, ["loss"])
  assert steps.tolist() == [5] and c["loss"].tolist() == [[2.0]]


def test_finished_seeds_checks_the_flags():
  assert curves.finished_seeds(None, 3).tolist() == [True] * 3
  assert curves.finished_seeds([False, True], 2).tolist() == [True, False]
  with pytest.raises(errors.DataError, match="one per seed"):
    curves.finished_seeds([False, True], 3)
