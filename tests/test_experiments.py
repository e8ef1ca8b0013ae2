"""The eigenvalue-map binary at tiny size: one run as a user runs it (a subprocess), its rerun and
its errors through the binaries' entry `experiments.cli.run_main` (in this process); the analysis."""

import json
import os

from absl import logging
import numpy as np
import pytest

from experiments import cli
from experiments.configs import fig4_cnn, fig20
from rl_align import eigenmap
from rl_align.runners import eigenmap as eigenmap_runner
from tests.helpers import run_module
from tests.tolerances import f64_tol, sampling_tol


@pytest.fixture(scope="module")
def fig20_tiny(tmp_path_factory):
  wd = tmp_path_factory.mktemp("fig20")
  proc = run_module(
    "experiments.eigenvalue_map",
    "--config=experiments/configs/fig20.py:right,tiny",
    f"--workdir={wd}",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return wd, proc


def _run_main(config, workdir):
  """What `python -m experiments.eigenvalue_map --config=... --workdir=workdir` runs."""
  return cli.run_main(
    eigenmap_runner.run_panels,
    config,
    str(workdir),
    argv=["experiments/eigenvalue_map.py", f"--workdir={workdir}"],
  )


def _error_line(capsys, config, workdir) -> str:
  """stderr of `_run_main`, which must exit with code 2 and end on one `error:` line (tests/
  test_configs.py checks, in a subprocess, that the binary prints nothing else)."""
  with pytest.raises(SystemExit) as e:
    _run_main(config, workdir)
  assert e.value.code == 2
  stderr = capsys.readouterr().err
  assert stderr.strip().splitlines()[-1].startswith("error: "), stderr[-2000:]
  return stderr


@pytest.mark.slow
def test_eigenvalue_map_writes_documented_schema(fig20_tiny):
  wd, _ = fig20_tiny
  res = json.load(open(wd / "right" / "results.json"))
  for key in (
    "eigenvalues",
    "sigma",
    "f",
    "f_pooled",
    "misalignment_eigenbasis",
    "misalignment_random_basis",
    "misalignment_floor",
    "train_accuracy",
    "snapshots",
    "early_time",
    "num_weight_samples",
  ):
    assert key in res, key
  s, d = len(res["f"]), len(res["eigenvalues"])
  assert (s, d) == (2, 30)
  assert np.all(np.diff(res["eigenvalues"]) <= 0)
  np.testing.assert_allclose(res["sigma"], np.sqrt(res["eigenvalues"]), rtol=f64_tol(1.0, 1))
  assert [snap["step"] for snap in res["snapshots"]] == [0, 4, 8]  # epochs 0,1,2 of 512/128
  assert {"step", "epoch", "f", "misalignment_eigenbasis"} <= set(res["snapshots"][0])
  # f at init is 1/sqrt(d) for LeCun-normal init, up to sampling noise: each f_i sqrt(d) is
  # sqrt(chi2_64 / 64) (64 neurons, independent across the 30 directions and 2 seeds): mean
  # 1 - 1/(4 * 64), std sqrt(1 / (2 * 64)); the mean of 60 within 5 sigma (tests/tolerances.py).
  np.testing.assert_allclose(
    np.mean(res["snapshots"][0]["f"]), 30**-0.5, rtol=sampling_tol(np.sqrt(1 / 128), 60) + 1 / 256
  )
  summary = json.load(open(wd / "results.json"))
  assert "rmse_vs_paper" in summary["right"]["checks"]
  for name in ("fig20.png", "right/eigenmap.png", "right/arrays.npz", "right/metrics.jsonl"):
    assert (wd / name).exists(), name


@pytest.mark.slow
def test_rerun_resumes_without_training(fig20_tiny, monkeypatch):
  wd, _ = fig20_tiny
  before = json.load(open(wd / "right" / "results.json"))
  lines = []
  monkeypatch.setattr(logging, "info", lambda fmt, *a, **k: lines.append(str(fmt) % a))
  _run_main(fig20.get_config("right,tiny"), wd)
  assert any("resumed from step 8" in l for l in lines), lines
  after = json.load(open(wd / "right" / "results.json"))
  np.testing.assert_array_equal(before["f"], after["f"])


@pytest.mark.slow
def test_changed_config_on_same_workdir_is_a_clear_error(fig20_tiny, capsys):
  wd, _ = fig20_tiny
  config = fig20.get_config("right,tiny")
  config.train.learning_rate = 0.5  # --config.train.learning_rate=0.5
  stderr = _error_line(capsys, config, wd)
  assert "another config" in stderr and "Traceback" not in stderr


def test_bad_flag_value_is_one_clear_line(tmp_path, capsys):
  config = fig20.get_config("right,tiny")
  config.train.optimizer = "rmsprop"  # --config.train.optimizer=rmsprop
  stderr = _error_line(capsys, config, tmp_path)
  assert "config.train.optimizer" in stderr and "Traceback" not in stderr


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
  config = fig4_cnn.get_config("random,tiny")
  config.data.name = "cifar10"  # --config.data.name=cifar10
  config.data.data_dir = str(tmp_path / "none")
  stderr = _error_line(capsys, config, tmp_path / "wd")
  assert "cifar10" in stderr and "Traceback" not in stderr


def test_early_time_fit_recovers_linear_law():
  lam = np.linspace(0.01, 9.0, 30)
  f = np.sqrt(0.03 + 0.002 * lam)
  fit = eigenmap.early_time_fit(f[None], lam)
  # float64 least squares on exact data (f^2 rounds twice): a backward-stable solve errs by
  # <= n u kappa(A) ||x|| on the coefficients and to first order as much on the fitted values.
  kappa = np.linalg.cond(np.stack([np.ones_like(lam), lam], 1))
  tol = float(f64_tol(kappa, 2 * 30 + 4))
  np.testing.assert_allclose([fit["s0_sq"], fit["c"]], [0.03, 0.002], rtol=0, atol=tol * 0.03)
  assert fit["r2"] > 1 - tol and fit["max_rel_err"] < tol
  bent = eigenmap.early_time_fit(np.sqrt(0.03 + 0.01 * np.sqrt(lam))[None], lam)
  # A non-linear f^2(lambda) is reported as a break: 0.10 here, 10x the threshold and ~1e13x the
  # rounding bound above.
  assert bent["max_rel_err"] > 0.01


def test_shape_checks_against_reference():
  res = {
    "sigma": np.array([1.0, 2.0, 3.0]),
    "f": np.array([[0.2, 0.3, 0.25], [0.2, 0.3, 0.25]]),
    "misalignment_eigenbasis": [0.1],
    "misalignment_random_basis": [1.0],
  }
  c = eigenmap.shape_checks(res, 3, {"sigma": [1.0, 3.0], "f": [0.2, 0.35]})
  assert c["peak_sigma"] == 2.0 and c["peak_f"] == 0.3  # exact: picked, not computed
  # float64: an interpolation, two squares, a mean and a root of values <= 0.35: a few roundings.
  np.testing.assert_allclose(c["rmse_vs_paper"], np.sqrt(0.1**2 / 2), rtol=0, atol=f64_tol(0.35, 8))
  assert c["misalignment_eigen_over_random"] == pytest.approx(0.1, rel=f64_tol(1.0, 1))


def test_compare_eigenvectors_aligned_vs_random():
  from rl_align import alignment, filters

  rng = np.random.default_rng(0)
  V = alignment.random_basis(1, 12)
  lam = np.linspace(3.0, 0.1, 12)
  cov_x = V @ np.diag(lam) @ V.T
  aligned = filters.compare_eigenvectors(cov_x, V @ np.diag(np.sqrt(lam) + 0.2) @ V.T, ks=(1, 3, 5))
  # Same eigenvectors up to float64 eigh error delta <= d^2 u ||A|| / gap (gap of sqrt(lam) >= 0.05);
  # the overlap (mean cos^2) loses 2 delta at most.
  delta = float(f64_tol(2.0 / 0.05, 12 * 12))
  for k in ("1", "3", "5"):
    assert aligned["subspace_overlap"][k] > 1 - 2 * delta
  a = rng.normal(size=(12, 12))
  unrelated = filters.compare_eigenvectors(cov_x, a @ a.T, ks=(3,))
  mean, std = unrelated["random_baseline"]["3"]
  assert abs(mean - 3 / 12) < sampling_tol(std, 200)  # E = k / d exactly; 200 trials, 5 sigma
  assert unrelated["subspace_overlap"]["3"] < 0.9


def test_best_matches_recover_a_reordering_and_beat_chance():
  from rl_align import alignment, filters

  V = alignment.random_basis(2, 40)
  perm = np.array([3, 0, 7, 1, 2] + list(range(4, 7)) + list(range(8, 40)))
  m = filters.best_matches(V, -V[:, perm], n=5, key=0)  # reordered, sign-flipped PCs
  assert m["best_match_pc"] == [4, 1, 8, 2, 3]
  np.testing.assert_allclose(m["best_match_cos"], 1.0, rtol=0, atol=f64_tol(1.0, 40))  # |v.v|
  # Chance: the best |cos| of a Haar-random unit vector against 40 orthonormal directions has
  # mean 0.387 and std 0.054 (2e5 Monte Carlo draws); the mean of n=5 within 5 sigma.
  assert abs(m["best_match_cos_random"] - 0.387) < sampling_tol(0.054, 5)


def test_pooled_floor_is_below_the_per_seed_floor():
  from rl_align import alignment

  V = alignment.random_basis(0, 8)
  lam = np.linspace(2.0, 0.2, 8)
  kernels = np.random.default_rng(0).normal(size=(4, 8, 16)) * 0.1  # [S, d, h]
  out = eigenmap.summarize(kernels, lam, V, floor_trials=3)
  assert out["misalignment_pooled_floor"]["mean"] < out["misalignment_floor"]["mean"]


def test_fig4_figure_draws_f_over_epochs(tmp_path):
  from rl_align.plots import eigenmap as eigenmap_plots

  snaps = [{"epoch": e, "f_pooled": np.full(5, 0.01 * e)} for e in (0, 5, 10)]
  res = {"sigma": np.linspace(0.1, 2, 5), "snapshots": snaps}
  path = eigenmap_plots.plot_f_over_epochs([res, res], ["random", "real"], str(tmp_path / "f.png"))
  assert os.path.getsize(path) > 1000
