"""The proposition, checked exactly: SGD/momentum commute with rotations that preserve Sigma_x;
Adam does not."""
import numpy as np
import pytest

from rl_align import covariance, eigenmap, models, symmetry, train


def _cfg(optimizer):
  cfg = train.default_config()
  cfg.update(num_seeds=1, num_epochs=3, batch_size=32, learning_rate=0.05, optimizer=optimizer,
             snapshot_epochs=(1, 3), train_eval_examples=0, matmul_precision="highest",
             seed_layout="unroll")
  return cfg


def _dense_problem():
  # Sigma_x with two degenerate eigenspaces so a non-trivial O preserves it.
  stds = np.array([2.0, 2.0, 2.0, 0.5, 0.5, 0.5])
  x = (np.random.default_rng(0).normal(size=(128, 6)) * stds).astype(np.float32)
  O = symmetry.covariance_preserving_rotation(stds ** 2, key=3)
  return x, O, stds


def test_rotation_preserves_covariance_and_is_nontrivial():
  _, O, stds = _dense_problem()
  cov = np.diag(stds ** 2)
  np.testing.assert_allclose(O.T @ cov @ O, cov, atol=1e-12)
  np.testing.assert_allclose(O.T @ O, np.eye(6), atol=1e-12)
  assert np.abs(O - np.eye(6)).max() > 0.3


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_dense_iterates_agree_up_to_rotation(optimizer):
  x, O, _ = _dense_problem()
  labels = train.random_labels(0, [0], 128, 4)
  gap = symmetry.equivariance_gap(models.DenseNet(widths=(32, 16), num_classes=4), _cfg(optimizer),
                                  x, labels, O)
  assert gap["max_rel_gap"] < 1e-4, gap


def test_adam_breaks_the_symmetry():
  x, O, _ = _dense_problem()
  labels = train.random_labels(0, [0], 128, 4)
  gap = symmetry.equivariance_gap(models.DenseNet(widths=(32, 16), num_classes=4), _cfg("adam"),
                                  x, labels, O)
  assert gap["max_rel_gap"] > 1e-2, gap


@pytest.mark.parametrize("optimizer,equivariant", [("momentum", True), ("adam", False)])
def test_conv_iterates_agree_up_to_channel_rotation(optimizer, equivariant):
  x = np.random.default_rng(1).normal(size=(64, 6, 6, 3)).astype(np.float32)
  O = symmetry.covariance_preserving_rotation(np.ones(3), key=5)  # white channels: any O preserves
  labels = train.random_labels(0, [0], 64, 4)
  model = models.PaperCNN(features=8, kernel_size=3, hidden=8, num_classes=4)
  gap = symmetry.equivariance_gap(model, _cfg(optimizer), x, labels, O)["max_rel_gap"]
  assert (gap < 1e-4) if equivariant else (gap > 1e-2), gap


def test_rotated_gaussian_weights_are_centred_and_aligned():
  """E[w] ~ 0 and Sigma_w aligned with a rotated, non-diagonal Sigma_x (random labels).

  A small first-layer init (std 0.01) makes the trained part of Sigma_w dominate the isotropic
  init part, so the gap to the random basis is far above the finite-sample noise."""
  from rl_align import alignment, data
  stds = np.linspace(0.2, 3.0, 6)
  ds = data.gaussian(1000, stds=stds, rotate=True, seed=4)
  lam, V = alignment.eigh_desc(data.gaussian_covariance(stds=stds, rotate=True, seed=4))
  assert np.abs(V - np.eye(6)).max() > 0.1   # really non-diagonal
  cfg = train.default_config()
  cfg.update(num_seeds=4, num_epochs=30, batch_size=64, learning_rate=0.05, train_eval_examples=0)
  labels = train.random_labels(0, range(4), 1000, 10)
  res = train.train(models.DenseNet(widths=(256, 64), first_layer_std=0.01), cfg, ds.x, labels)
  kernels = models.first_layer_kernel(res.params)
  w = covariance.weight_samples(kernels)
  assert np.abs(w.mean(0)).max() < 0.2 * np.sqrt((w ** 2).mean(0)).min()
  s = eigenmap.summarize(kernels, lam, V, key=0)
  assert np.all(s["misalignment_eigenbasis"] < 0.3 * s["misalignment_random_basis"])
  assert s["misalignment_pooled_eigenbasis"] < 0.1 * s["misalignment_pooled_random_basis"]
