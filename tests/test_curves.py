import numpy as np

from rl_align import curves


def test_iterations_to_reach_interpolates_and_flags_never():
  steps = [0, 100, 200, 300]
  acc = np.array([[0.1, 0.5, 0.9, 1.0],    # crosses 0.7 halfway between 100 and 200
                  [0.1, 0.2, 0.3, 0.4]])   # never reaches 0.7
  it = curves.iterations_to_reach(steps, acc, 0.7)
  assert it[0] == 150.0 and np.isinf(it[1])


def test_speedup_is_ratio_of_mean_iterations():
  steps = np.arange(0, 1001, 100)
  slow = np.clip(steps / 1000, 0, 1)[None]       # reaches 0.5 at 500
  fast = np.clip(steps / 500, 0, 1)[None]        # reaches 0.5 at 250
  assert curves.speedup(steps, slow, fast, 0.5) == 2.0
  assert curves.speedup(steps, fast, slow, 0.5) == 0.5
  assert np.isnan(curves.speedup(steps, slow * 0.1, fast, 0.5))
