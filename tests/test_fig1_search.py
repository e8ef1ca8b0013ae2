"""The Fig 1 negative-transfer search: a section 3 sweep of VGG16 on Fashion-MNIST (Fig 1 right).

`specialization.behind_fraction` is the criterion ("slower than scratch by more than the standard
error over most of downstream training"), `report.search_row` turns it into the claims-table row,
and `specialization.py:vgg16_fmnist_tiny` runs the whole search end to end on generated idx files.
"""
import json
import os

import numpy as np
import pytest

from experiments import cli
from experiments.configs import specialization as spec_config
from rl_align import report
from rl_align import specialization as lib
from rl_align.runners import specialization as spec_runner
from tests import fake_idx

STEPS = np.arange(0, 110, 10)


def _curves(rng, level, n=8, noise=0.01):
  """[n, T] accuracy curves rising to `level`, with per-seed noise."""
  base = level * (1 - np.exp(-STEPS / 30.0))
  return base + noise * rng.standard_normal((n, len(STEPS)))


def test_behind_fraction_separates_a_slower_arm_from_noise():
  rng = np.random.default_rng(0)
  scratch = _curves(rng, 0.9)
  slower = _curves(rng, 0.7)               # behind by ~0.2 * (1 - e^-t/30) >> SE ~ 0.005
  same = _curves(rng, 0.9)                 # the same curve, other noise
  assert lib.behind_fraction(STEPS, scratch, slower) == 1.0
  assert lib.behind_fraction(STEPS, slower, scratch) == 0.0
  # Same mean: behind by > 1 SE at about 16% of the steps by chance, by > 2 SE at about 2%.
  assert lib.behind_fraction(STEPS, scratch, same) < 0.5
  assert lib.behind_fraction(STEPS, scratch, same, z=2.0) <= lib.behind_fraction(STEPS, scratch, same)


def test_behind_fraction_uses_the_standard_error_not_the_mean_gap_alone():
  rng = np.random.default_rng(1)
  scratch = _curves(rng, 0.9, noise=0.3)   # a 0.05 gap inside SE ~ 0.15: not "behind"
  arm = _curves(rng, 0.85, noise=0.3)
  assert lib.behind_fraction(STEPS, scratch, arm) < 0.5
  quiet_s, quiet_a = _curves(rng, 0.9, noise=0.001), _curves(rng, 0.85, noise=0.001)
  assert lib.behind_fraction(STEPS, quiet_s, quiet_a) == 1.0


def _point(pid_lr, behind, ahead=0.0, gain_hi=1.5):
  return {"width": 8, "learning_rate": pid_lr, "num_random_classes": 100, "upstream_steps": 2000,
          "arm": "rescaled", "finished": [True] * 8, "gain_ci": [0.8, gain_hi],
          "gain_censored": 0.9, "censored": "none", "accuracy_behind_fraction": behind,
          "accuracy_behind_fraction_2se": behind / 2, "accuracy_ahead_fraction": ahead,
          "auc_difference": -0.01}


@pytest.mark.parametrize("fractions,verdict", [
    ((0.0, 0.1), report.PARTLY),             # behind only somewhere (e.g. the start)
    ((0.0, 0.6), report.REPRODUCED),         # behind over most of training at one point
    ((0.0, 0.0), report.NOT_REPRODUCED),
])
def test_search_row_verdicts(fractions, verdict):
  res = {"points": {f"p{i}": _point(0.01, f) for i, f in enumerate(fractions)}}
  r = report.search_row(res, None)
  assert r["verdict"] == verdict
  assert f"{sum(f >= 0.5 for f in fractions)}/2 points" in r["ours"]


def test_search_row_positive_direction_reads_the_ahead_fraction():
  res = {"points": {"a": _point(0.01, 0.0, ahead=0.9), "b": _point(0.01, 0.6, ahead=0.0)}}
  pos, neg = report.search_row(res, None, "positive"), report.search_row(res, None, "negative")
  assert pos["verdict"] == neg["verdict"] == report.REPRODUCED
  assert "most: a:" in pos["ours"] and "most: b:" in neg["ours"]


def test_search_row_refuses_points_without_the_fraction():
  p = _point(0.01, 0.3)
  del p["accuracy_behind_fraction"]
  with pytest.raises(report.ReportError, match="points.json"):
    report.search_row({"points": {"p": p}}, None)


def test_a_point_behind_over_most_of_training_counts_as_negative_for_the_drop_row():
  points = {"neg": _point(0.02, 0.7, gain_hi=1.2), "pos": _point(0.02, 0.0, gain_hi=1.2)}
  assert report.negative_points(points) == ["neg"]


@pytest.mark.slow
def test_tiny_search_end_to_end(tmp_path):
  """The vgg16_fmnist_tiny search runs through the binary's entry on generated idx files; every
  point has its behind/ahead fractions and per-seed curves, and the report gives the search rows."""
  folder = fake_idx.write(tmp_path / "idx", n_train=300, n_test=80)
  c = spec_config.get_config("vgg16_fmnist_tiny")
  c.data.data_dir = folder
  workdir = str(tmp_path / "search")
  cli.run_main(spec_runner.run, c, workdir,
               argv=["experiments/configs/specialization.py:vgg16_fmnist_tiny"])
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    res = json.load(f)
  assert len(res["points"]) == 4          # K 3/6 x L 10/20, arm rescaled
  for p in res["points"].values():
    assert 0.0 <= p["accuracy_behind_fraction"] <= 1.0
    assert p["accuracy_behind_fraction_2se"] <= p["accuracy_behind_fraction"]
    a, s = np.asarray(p["accuracy_seeds"]), np.asarray(p["accuracy_scratch_seeds"])
    assert a.shape == s.shape == (2, len(p["downstream_steps"]))
    assert p["accuracy_behind_fraction"] == lib.behind_fraction(p["downstream_steps"], s, a)
  run = {"name": workdir, "path": workdir, "results": res, "panels": {},
         "config": c.to_dict(), "run": None}
  rows = report.claims(run)
  assert [r["figure"] for r in rows] == ["Fig 1 search"] * 3
  assert rows[0]["verdict"] in report.VERDICTS
