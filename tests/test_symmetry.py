"""The proposition, checked exactly: SGD/momentum commute with rotations that preserve Sigma_x;
Adam does not."""

import numpy as np
import pytest

from rl_align import covariance, eigenmap, models, seeds, symmetry, train
from tests.helpers import train_config
from tests.tolerances import f32_run_tol, f64_tol, sampling_tol

# Equivariance holds exactly in exact arithmetic; the two float32 runs differ by rounding only: the
# relative gap ||W' - O^T W|| / ||W|| is bounded by f32_run_tol at unit parameter scale (errors
# relative to the weights), with the per-step rounding chain of each model (tests/tolerances.py):
# forward/backward fan-ins, the batch sum (32; x 16 positions for the conv kernel), optimizer ops,
# plus the rotation of the inputs and the first kernel (6 or 3 terms).
_DENSE_STEPS, _DENSE_CHAIN = 3 * 128 // 32, 6 + 32 + 16 + 4 + 16 + 32 + 32 + 8 + 6
_CONV_STEPS, _CONV_CHAIN = 3 * 64 // 32, 27 + 128 + 8 + 4 + 8 + 128 + 32 * 16 + 8 + 3
_DENSE_TOL = float(f32_run_tol(1.0, _DENSE_STEPS, _DENSE_CHAIN))  # 4.2e-4
_CONV_TOL = float(f32_run_tol(1.0, _CONV_STEPS, _CONV_CHAIN))  # 1.2e-3


def _cfg(optimizer):
  return train_config(
    num_seeds=1,
    num_epochs=3,
    batch_size=32,
    learning_rate=0.05,
    optimizer=optimizer,
    snapshot_epochs=(1, 3),
    train_eval_examples=0,
    matmul_precision="highest",
    member_lift="unroll",
    conv_impl="lax",
  )


def _dense_problem():
  # Sigma_x with two degenerate eigenspaces so a non-trivial O preserves it.
  stds = np.array([2.0, 2.0, 2.0, 0.5, 0.5, 0.5])
  x = (np.random.default_rng(0).normal(size=(128, 6)) * stds).astype(np.float32)
  O = symmetry.covariance_preserving_rotation(stds**2, key=3)
  return x, O, stds


def test_rotation_preserves_covariance_and_is_nontrivial():
  _, O, stds = _dense_problem()
  cov = np.diag(stds**2)
  # float64 products of 6 terms (and O orthogonal to float64 QR accuracy, d^2 u).
  np.testing.assert_allclose(O.T @ cov @ O, cov, atol=f64_tol(4.0, 6 * 6 + 12))
  np.testing.assert_allclose(O.T @ O, np.eye(6), atol=f64_tol(1.0, 6 * 6 + 6))
  assert np.abs(O - np.eye(6)).max() > 0.3


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_dense_iterates_agree_up_to_rotation(optimizer):
  x, O, _ = _dense_problem()
  labels = seeds.random_labels(0, [0], 128, 4)
  gap = symmetry.equivariance_gap(
    models.DenseNet(widths=(32, 16), num_classes=4), _cfg(optimizer), x, labels, O
  )
  assert gap["max_rel_gap"] < _DENSE_TOL, gap


def test_adam_breaks_the_symmetry():
  x, O, _ = _dense_problem()
  labels = seeds.random_labels(0, [0], 128, 4)
  gap = symmetry.equivariance_gap(
    models.DenseNet(widths=(32, 16), num_classes=4), _cfg("adam"), x, labels, O
  )
  assert gap["max_rel_gap"] > 20 * _DENSE_TOL, gap  # far beyond what rounding explains


@pytest.mark.parametrize("optimizer,equivariant", [("momentum", True), ("adam", False)])
def test_conv_iterates_agree_up_to_channel_rotation(optimizer, equivariant):
  x = np.random.default_rng(1).normal(size=(64, 6, 6, 3)).astype(np.float32)
  O = symmetry.covariance_preserving_rotation(np.ones(3), key=5)  # white channels: any O preserves
  labels = seeds.random_labels(0, [0], 64, 4)
  model = models.PaperCNN(features=8, kernel_size=3, hidden=8, num_classes=4)
  gap = symmetry.equivariance_gap(model, _cfg(optimizer), x, labels, O)["max_rel_gap"]
  assert (gap < _CONV_TOL) if equivariant else (gap > 20 * _CONV_TOL), gap


def test_rotated_gaussian_weights_are_centred_and_aligned():
  """E[w] ~ 0 and Sigma_w aligned with a rotated, non-diagonal Sigma_x (random labels).

  A small first-layer init (std 0.01) makes the trained part of Sigma_w dominate the isotropic
  init part, so the gap to the random basis is far above the finite-sample noise."""
  from rl_align import alignment, data

  stds = np.linspace(0.2, 3.0, 6)
  ds = data.gaussian(1000, stds=stds, rotate=True, seed=4)
  lam, V = alignment.eigh_desc(data.gaussian_covariance(stds=stds, rotate=True, seed=4))
  assert np.abs(V - np.eye(6)).max() > 0.1  # really non-diagonal
  cfg = train_config(
    num_seeds=4, num_epochs=30, batch_size=64, learning_rate=0.05, train_eval_examples=0
  )
  labels = seeds.random_labels(0, range(4), 1000, 10)
  res = train.train(models.DenseNet(widths=(256, 64), first_layer_std=0.01), cfg, ds.x, labels)
  kernels = models.first_layer_kernel(res.params)
  w = covariance.weight_samples(kernels)
  # E[w] = 0 (the init is sign-symmetric and neurons are exchangeable): the mean of 4 x 256
  # neurons lies within 5 sigma = 5 rms / sqrt(1024) = 0.16 rms.
  assert np.abs(w.mean(0)).max() < sampling_tol(np.sqrt((w**2).mean(0)).min(), len(w))
  s = eigenmap.summarize(kernels, lam, V, key=0)
  assert np.all(s["misalignment_eigenbasis"] < 0.3 * s["misalignment_random_basis"])
  assert s["misalignment_pooled_eigenbasis"] < 0.1 * s["misalignment_pooled_random_basis"]
