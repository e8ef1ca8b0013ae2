"""Tests of rl_align.alignment: misalignment, f, eigenbases, degenerate groups, subspaces, floor."""

import jax
import numpy as np
import pytest

from rl_align import alignment
from rl_align import errors
from tests.tolerances import assert_close, f64_tol, sampling_tol


def _rotated_covariance(eigvals, seed=0):
  q = alignment.random_basis(seed, len(eigvals))
  return q @ np.diag(eigvals) @ q.T


def _rel_tol(cov):
  """Relative float64 error of the dense linear algebra on a d x d matrix of condition number kappa
  (eigh, Cholesky, triangular solves, quadratic forms: each normwise backward stable with error
  <= c * d * u * kappa, Golub & Van Loan ch. 7-8), chained d deep: f64_tol(kappa, d * d) (see
  tests/tolerances.py).  An orthonormal basis has kappa = 1."""
  return float(f64_tol(np.linalg.cond(cov), len(cov) ** 2))


def _g(lam):
  return np.sqrt(lam) + 0.1 * lam**2


def _aligned_pair(d=12, seed=0):
  lam = np.linspace(3.0, 0.1, d)
  cov_x = _rotated_covariance(lam, seed)
  lam_x, v = alignment.eigh_desc(cov_x)
  cov_w = v @ np.diag(_g(lam_x)) @ v.T
  return cov_x, cov_w, lam, v


def test_aligned_weights_have_zero_misalignment_only_in_the_data_eigenbasis():
  cov_x, cov_w, lam, v = _aligned_pair()
  assert np.abs(cov_x - np.diag(np.diag(cov_x))).max() > 0.1  # truly non-diagonal
  d = len(lam)
  assert alignment.misalignment(cov_w, v) < d * _rel_tol(cov_w)  # d terms, each ~ its rounding
  random = alignment.random_basis(1, len(lam))
  assert alignment.misalignment(cov_w, random) > 0.5
  lam_x, f = alignment.transfer_function(cov_x, cov_w)
  # Eigenvalues: error normwise, relative to lam_max; f: quadratic forms in cov_w, plus g(lam_x)
  # whose lam_x carries that error, relatively lam_max / lam_min larger at the smallest lam.
  np.testing.assert_allclose(lam_x, lam, rtol=0, atol=_rel_tol(cov_x) * lam[0])
  np.testing.assert_allclose(
    f, np.sqrt(_g(lam)), atol=0, rtol=_rel_tol(cov_w) + _rel_tol(cov_x) * lam[0] / lam[-1]
  )
  # Exact: transfer_function is eigh_desc + transfer_function_in_basis on the same values.
  np.testing.assert_array_equal(alignment.transfer_function_in_basis(cov_w, v), f)


def test_misalignment_is_scale_invariant_nonnegative_and_matches_explicit_inverse():
  rng = np.random.default_rng(3)
  a = rng.standard_normal((8, 8))
  cov_w = a @ a.T + 0.5 * np.eye(8)
  basis = alignment.random_basis(2, 8)
  terms = alignment.misalignment_terms(cov_w, basis)
  assert np.all(terms >= 0) and terms.sum() > 0
  inv = np.linalg.inv(cov_w)
  explicit = (
    np.sqrt(
      np.einsum("ij,ik,kj->j", basis, cov_w, basis) * np.einsum("ij,ik,kj->j", basis, inv, basis)
    )
    - 1
  )
  # Each term is sqrt(a b) - 1 with a, b quadratic forms in cov_w and its inverse: an error of
  # (terms + 1) * rel for each of the two computations.
  term_tol = 2 * (terms + 1) * _rel_tol(cov_w)
  assert_close(terms, explicit, term_tol, "terms vs explicit inverse")
  m = alignment.misalignment(cov_w, basis)
  # Scaling by 1e-6 / 1e4 (not powers of 2) rounds cov_w once more: within the same bound.
  assert alignment.misalignment(1e-6 * cov_w, basis) == pytest.approx(m, rel=0, abs=term_tol.sum())
  assert alignment.misalignment(1e4 * cov_w, basis) == pytest.approx(m, rel=0, abs=term_tol.sum())
  # mean vs sum / 8 of 8 non-negative terms: two summation orders.
  assert alignment.misalignment(cov_w, basis, reduce="mean") == pytest.approx(
    m / 8, rel=0, abs=f64_tol(m / 8, 8)
  )
  # A subset of directions (columns) is allowed.
  assert_close(alignment.misalignment_terms(cov_w, basis[:, :3]), terms[:3], term_tol[:3], "subset")


def test_singular_or_non_psd_weight_covariance_raises_and_ridge_fixes_singular():
  rng = np.random.default_rng(4)
  w = rng.standard_normal((5, 10))  # 5 samples in 10 dims: rank 5
  singular = w.T @ w / 5
  basis = alignment.random_basis(0, 10)
  with pytest.raises(errors.NumericalError, match="ridge="):
    alignment.misalignment(singular, basis)
  m = alignment.misalignment(singular, basis, ridge=1e-3)
  assert np.isfinite(m) and m > 0
  non_psd = _rotated_covariance(np.array([2.0, 1.0, -0.5]), 1)
  with pytest.raises(errors.NumericalError, match="not positive definite"):
    alignment.misalignment(non_psd, np.eye(3))
  with pytest.raises(errors.ConfigError, match="ridge"):
    alignment.misalignment(singular, basis, ridge=-1.0)


def test_repeated_eigenvalues_group_and_keep_alignment():
  lam = np.array([2.0, 2.0, 2.0, 1.0, 1.0, 0.5])
  cov_x = _rotated_covariance(lam, 5)
  lam_x, v = alignment.eigh_desc(cov_x)
  groups = alignment.group_degenerate(lam_x, rtol=1e-9)
  assert [g.tolist() for g in groups] == [[0, 1, 2], [3, 4], [5]]
  cov_w = v @ np.diag(_g(lam_x)) @ v.T
  d = len(lam)
  assert alignment.misalignment(cov_w, v) < d * _rel_tol(cov_w)  # as in the first test
  # Any orthonormal basis of the top eigenspace is as good: the eigenspaces coincide exactly.
  mixed = v.copy()
  mixed[:, :3] = v[:, :3] @ alignment.random_basis(9, 3)
  assert alignment.misalignment(cov_w, mixed) < d * _rel_tol(cov_w)
  # Orthonormal inputs (kappa 1): a d-term product, then an SVD.
  np.testing.assert_allclose(alignment.principal_cosines(v, mixed, 3), 1.0, atol=_rel_tol(v))
  assert alignment.overlap_matrix(v, mixed)[:3, :3].max() < 1.0 - 1e-6  # vectors differ
  assert [g.tolist() for g in alignment.group_degenerate(np.array([1.0, 0.99, 0.5]), 0.02)] == [
    [0, 1],
    [2],
  ]
  assert len(alignment.group_degenerate(np.zeros(4))) == 1
  with pytest.raises(errors.DataError, match="descending"):
    alignment.group_degenerate(np.array([1.0, 2.0]))


def test_eigh_desc_sorts_reconstructs_and_checks_input():
  cov = _rotated_covariance(np.array([0.3, 4.0, 1.0, 2.0]), 2)
  lam, v = alignment.eigh_desc(cov)
  # Backward stable eigh: errors normwise, relative to lam_max = 4 (and 1 for orthogonality).
  np.testing.assert_allclose(lam, [4.0, 2.0, 1.0, 0.3], rtol=0, atol=4 * _rel_tol(cov))
  np.testing.assert_allclose(v @ np.diag(lam) @ v.T, cov, atol=4 * _rel_tol(cov))
  np.testing.assert_allclose(v.T @ v, np.eye(4), atol=_rel_tol(cov))
  assert np.all(v[np.argmax(np.abs(v), axis=0), range(4)] > 0)  # deterministic signs
  bad = cov.copy()
  bad[0, 1] += 0.1
  with pytest.raises(errors.DataError, match="not symmetric"):
    alignment.eigh_desc(bad)
  bad = cov.copy()
  bad[2, 2] = np.nan
  with pytest.raises(errors.DataError, match="NaN"):
    alignment.eigh_desc(bad)
  with pytest.raises(errors.DataError, match="square"):
    alignment.eigh_desc(np.ones((2, 3)))


def test_random_basis_is_orthogonal_reproducible_and_unbiased():
  q = alignment.random_basis(0, 7)
  np.testing.assert_allclose(q.T @ q, np.eye(7), atol=_rel_tol(np.eye(7)))  # Householder QR
  np.testing.assert_array_equal(q, alignment.random_basis(0, 7))
  assert not np.allclose(q, alignment.random_basis(1, 7))
  key = jax.random.key(3)
  np.testing.assert_array_equal(alignment.random_basis(key, 5), alignment.random_basis(key, 5))
  np.testing.assert_array_equal(
    alignment.random_basis(jax.random.PRNGKey(3), 5),
    alignment.random_basis(jax.random.PRNGKey(3), 5),
  )
  # Haar: every entry is symmetric about 0 with E[q_ij^2] = 1/d (a QR without the sign fix
  # makes the diagonal of q biased: mean q_00 ~ -0.49 over 600 draws).  Sampling bounds (5 sigma,
  # tests/tolerances.py) over 600 draws: q_ij has std sqrt(1/3) -> 0.118; q_ij^2 ~ Beta(1/2, 1)
  # has std sqrt(0.5 / (2.25 * 2.5)) = 0.298 -> 0.061.
  draws = np.stack([alignment.random_basis(s, 3) for s in range(600)])
  mean_tol = sampling_tol(np.sqrt(1 / 3), 600)
  assert np.abs(draws[:, 0, 0].mean()) < mean_tol and np.abs(draws[:, 1, 1].mean()) < mean_tol
  np.testing.assert_allclose(
    (draws**2).mean(0), np.full((3, 3), 1 / 3), atol=sampling_tol(np.sqrt(0.5 / (2.25 * 2.5)), 600)
  )


def test_subspace_overlap_and_random_baseline():
  v = alignment.random_basis(4, 10)
  tol = _rel_tol(v)  # orthonormal (kappa 1), 10-term products and an SVD
  np.testing.assert_allclose(alignment.principal_cosines(v, v, 4), 1.0, atol=tol)
  np.testing.assert_allclose(alignment.principal_cosines(v, v[:, ::-1], 4), 0.0, atol=tol)
  assert alignment.subspace_overlap(v, v, 4) == pytest.approx(1.0, rel=0, abs=tol)
  np.testing.assert_allclose(alignment.overlap_matrix(v, v), np.eye(10), atol=tol)
  # E[mean cos^2] of a random 3-space against a fixed one in 10 dims is exactly 3/10; the mean of
  # 400 trials lies within the sampling bound (5 sigma / sqrt(400)).
  mean, std = alignment.random_subspace_baseline(10, 3, key_or_seed=0, trials=400)
  assert mean == pytest.approx(0.3, abs=sampling_tol(std, 400))
  with pytest.raises(errors.ConfigError, match="exceeds"):
    alignment.principal_cosines(v[:, :2], v, 3)


def test_finite_sample_floor_shrinks_with_samples_and_brackets_a_measurement():
  _, cov_w, lam, v = _aligned_pair(d=8, seed=1)
  var = alignment.variances_in_basis(cov_w, v)
  small = alignment.finite_sample_floor(v, var, 50, key_or_seed=0, trials=20)
  large = alignment.finite_sample_floor(v, var, 5000, key_or_seed=0, trials=20)
  assert small[0] > 5 * large[0] > 0
  assert small == alignment.finite_sample_floor(v, var, 50, key_or_seed=0, trials=20)
  # One estimate from 50 samples of the aligned law lands within the floor's spread.
  rng = np.random.default_rng(11)
  w = rng.standard_normal((50, 8)) * np.sqrt(_g(lam)) @ v.T
  measured = alignment.misalignment(w.T @ w / 50, v)
  # One draw against a mean of 20 trials: 5 sigma of (draw - mean), std * sqrt(1 + 1/20).
  assert abs(measured - small[0]) < sampling_tol(small[1] * np.sqrt(1 + 1 / 20), 1)
  centered = alignment.finite_sample_floor(
    v, var, 50, key_or_seed=0, trials=5, centered=True, reduce="mean"
  )
  assert centered[0] > 0


def test_bad_arguments_raise_clear_errors():
  _, cov_w, _, v = _aligned_pair(d=4)
  with pytest.raises(errors.ConfigError, match="reduce"):
    alignment.misalignment(cov_w, v, reduce="max")
  with pytest.raises(errors.DataError, match="rows"):
    alignment.misalignment(cov_w, np.eye(5))
  with pytest.raises(errors.DataError, match="unit norm"):
    alignment.misalignment(cov_w, 2 * v)
  with pytest.raises(errors.DataError, match="same coordinates"):
    alignment.transfer_function(np.eye(3), cov_w)
  with pytest.raises(errors.DataError, match="variances"):
    alignment.finite_sample_floor(v, [1.0, 2.0], 10)
  with pytest.raises(errors.ConfigError, match="key_or_seed"):
    alignment.random_basis("zero", 3)


def test_rotating_an_aligned_sigma_w_keeps_its_spectrum_and_loses_the_alignment():
  """The control of the transfer experiment (arm covariance_rotated) as a property, on Fig 20's
  Gaussian data (right panel: sigma = 0.1..3.0, rotated): Sigma_w = g(Sigma_x) is aligned
  (misalignment 0 in the data eigenbasis); Q Sigma_w Q^T for a Haar-random Q has the same
  eigenvalues and scores in the data eigenbasis like Sigma_w itself scores in random bases."""
  from rl_align import data  # pylint: disable=g-import-not-at-top

  cov_x = data.gaussian_covariance(stds=np.round(np.arange(1, 31) * 0.1, 1), rotate=True, seed=0)
  lam, v = alignment.eigh_desc(cov_x)
  f = 0.18 + 0.02 * np.sqrt(lam)  # a Fig 20-like rising transfer function
  cov_w = (v * f**2) @ v.T
  q = alignment.random_basis(1, 30)
  rot = q @ cov_w @ q.T
  np.testing.assert_allclose(
    np.linalg.eigvalsh(rot), np.linalg.eigvalsh(cov_w), rtol=0, atol=f64_tol(f.max() ** 2, 30 * 30)
  )
  assert alignment.misalignment(cov_w, v) < f64_tol(30.0, 30 * 30)
  random_bases = [
    alignment.misalignment(cov_w, alignment.random_basis(s, 30)) for s in range(2, 202)
  ]
  m, s = np.mean(random_bases), np.std(random_bases)
  assert abs(alignment.misalignment(rot, v) - m) < 4 * s
  assert m > 10 * s  # and that level is far from 0: the rotation destroyed the alignment


def test_finite_sample_floor_draws_the_law_of_the_sample_second_moment():
  """Bartlett's draw of the Wishart matrix (n >= d) and direct sampling (n < d path, and an
  explicit reference here) give the same floor, to Monte-Carlo error."""
  v = alignment.random_basis(0, 6)
  var = np.array([3.0, 2.0, 1.0, 0.5, 0.2, 0.1])
  got = alignment.finite_sample_floor(v, var, 40, 0, trials=2000)
  rng = np.random.default_rng(5)
  ref = []
  for _ in range(2000):
    w = (rng.standard_normal((40, 6)) * np.sqrt(var)) @ v.T
    ref.append(alignment.misalignment(w.T @ w / 40, v, ridge=1e-9))
  # two independent 2000-trial means: their difference has std ~ sqrt(2) * std / sqrt(2000)
  assert abs(got[0] - np.mean(ref)) < 5 * np.sqrt(2 / 2000) * np.std(ref)
  assert got[1] == pytest.approx(np.std(ref), rel=0.15)
