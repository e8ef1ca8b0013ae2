"""The Fig 1 negative-transfer search: a section 3 sweep of VGG16 on Fashion-MNIST (Fig 1 right).

`specialization.behind_fraction` describes a point ("slower than scratch by more than the standard
error" at a share of the downstream steps); the claims-table rows are `rl_align.claims`
(tests/test_claims.py: every verdict), and `specialization.py:vgg16_fmnist_tiny` runs the whole
search end to end on generated idx files.
"""

import json
import os

import numpy as np
import pytest

from experiments import cli
from experiments.configs import specialization as spec_config
from rl_align import claims
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
  slower = _curves(rng, 0.7)  # behind by ~0.2 * (1 - e^-t/30) >> SE ~ 0.005
  same = _curves(rng, 0.9)  # the same curve, other noise
  assert lib.behind_fraction(STEPS, scratch, slower) == 1.0
  assert lib.behind_fraction(STEPS, slower, scratch) == 0.0
  # Same mean: behind by > 1 SE at about 16% of the steps by chance, by > 2 SE at about 2%.
  assert lib.behind_fraction(STEPS, scratch, same) < 0.5
  assert lib.behind_fraction(STEPS, scratch, same, z=2.0) <= lib.behind_fraction(
    STEPS, scratch, same
  )


def test_behind_fraction_uses_the_standard_error_not_the_mean_gap_alone():
  rng = np.random.default_rng(1)
  scratch = _curves(rng, 0.9, noise=0.3)  # a 0.05 gap inside SE ~ 0.15: not "behind"
  arm = _curves(rng, 0.85, noise=0.3)
  assert lib.behind_fraction(STEPS, scratch, arm) < 0.5
  quiet_s, quiet_a = _curves(rng, 0.9, noise=0.001), _curves(rng, 0.85, noise=0.001)
  assert lib.behind_fraction(STEPS, quiet_s, quiet_a) == 1.0


@pytest.mark.slow
def test_tiny_search_end_to_end(tmp_path):
  """The vgg16_fmnist_tiny search runs through the binary's entry on generated idx files; every
  point has its behind/ahead fractions and per-seed curves, and the report gives the search rows."""
  folder = fake_idx.write(tmp_path / "idx", n_train=300, n_test=80)
  c = spec_config.get_config("vgg16_fmnist_tiny")
  c.data.data_dir = folder
  workdir = str(tmp_path / "search")
  cli.run_main(
    spec_runner.run, c, workdir, argv=["experiments/configs/specialization.py:vgg16_fmnist_tiny"]
  )
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    res = json.load(f)
  assert len(res["points"]) == 4  # K 3/6 x L 10/20, arm rescaled
  for p in res["points"].values():
    assert 0.0 <= p["accuracy_behind_fraction"] <= 1.0
    assert p["accuracy_behind_fraction_2se"] <= p["accuracy_behind_fraction"]
    a, s = np.asarray(p["accuracy_seeds"]), np.asarray(p["accuracy_scratch_seeds"])
    assert a.shape == s.shape == (2, len(p["downstream_steps"]))
    assert p["accuracy_behind_fraction"] == lib.behind_fraction(p["downstream_steps"], s, a)
  run = {
    "name": workdir,
    "path": workdir,
    "results": res,
    "panels": {},
    "config": c.to_dict(),
    "run": None,
  }
  assert res["claims"]["figure"] == "fig1_search"
  rows = claims.rows(run)
  assert [r.figure for r in rows] == ["Fig 1 search"] * 3
  assert res["claims"]["verdicts"] == {r.id: r.verdict for r in rows}
