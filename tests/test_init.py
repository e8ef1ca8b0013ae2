"""Tests of rl_align.init: covariance-aligned initializers, f interpolation, section 2.5, rescaling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl_align import covariance, errors
from rl_align import init
from tests.tolerances import assert_close, f32_tol, f64_tol, sampling_tol


def _random_cov(d, seed=0):
  a = np.random.default_rng(seed).normal(size=(d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def _assert_sample_moment(est, cov, n, what):
  """An uncentered second moment `est` of n vectors drawn from N(0, cov) against cov, entry by entry
  within the 5-sigma sampling bound: entry (i, j) has std sqrt((S_ii S_jj + S_ij^2) / n)
  (tests/tolerances.py).  Estimates are computed in float64, so their sums add nothing."""
  var = np.diag(cov)
  assert_close(est, cov, sampling_tol(np.sqrt(np.outer(var, var) + cov**2), n), what)


def _moment(w):
  """float64 W W^T / n of the columns of w [d, n]."""
  w = np.asarray(w, np.float64)
  return w @ w.T / w.shape[1]


def test_dense_kernel_columns_have_covariance_sigma():
  cov = _random_cov(5)
  w = np.asarray(init.covariance_init(cov)(jax.random.key(0), (5, 40_000)))
  assert w.shape == (5, 40_000)
  _assert_sample_moment(_moment(w), cov, 40_000, "second moment")
  assert_close(w.astype(np.float64).mean(1), 0, sampling_tol(np.sqrt(np.diag(cov)), 40_000), "mean")


def test_conv_kernel_flattens_in_patch_order():
  # A diagonal Sigma with distinct variances per (kh, kw, C) coordinate pins down the order.
  var = np.arange(1, 13, dtype=np.float64)  # 2 x 2 x 3 = 12
  cov = np.diag(var)
  cov[0, 5] = cov[5, 0] = 0.5  # one correlated pair
  k = np.asarray(init.covariance_init(cov)(jax.random.key(1), (2, 2, 3, 30_000)))
  _assert_sample_moment(covariance.weight_covariance(k), cov, 30_000, "conv second moment")
  # (kh, kw, C) order: a sample variance has relative std sqrt(2 / n); 5 sigma.
  assert k[1, 0, 2].astype(np.float64).var() == pytest.approx(
    var[1 * 6 + 0 * 3 + 2], rel=sampling_tol(np.sqrt(2), 30_000)
  )


def test_transfer_function_hits_knots_and_is_linear_in_log_lambda():
  lam = np.array([0.01, 0.1, 1.0, 10.0])
  fv = np.array([0.2, 0.5, 0.3, 0.4])  # rises and falls: not monotone
  f = init.TransferFunction(lam, fv)
  # float64 interpolation in log lambda: the logs (|log| <= 12) round, times slopes <= 0.13 per
  # unit of log, plus a few roundings of values <= 0.5 (tests/tolerances.py).
  tol = f64_tol(12 * 0.13 + 0.5, 8)
  np.testing.assert_allclose(f(lam), fv, rtol=0, atol=tol)
  np.testing.assert_allclose(f(np.sqrt(0.1 * 1.0)), 0.4, rtol=0, atol=tol)  # midpoint in log lambda
  np.testing.assert_allclose(f(0.1 * 10**0.25), 0.5 - 0.25 * 0.2, rtol=0, atol=tol)
  np.testing.assert_allclose(
    f([1e-5, 0.0, 1e3]), [0.2, 0.2, 0.4], rtol=0, atol=tol
  )  # constant outside


def test_transfer_init_builds_v_diag_f2_vt():
  cov_x = _random_cov(4, seed=3)
  lam, v = np.linalg.eigh(cov_x)
  f = init.TransferFunction(lam, 0.1 + lam)
  w = np.asarray(init.transfer_init(cov_x, f)(jax.random.key(2), (4, 50_000)))
  target = (v * (0.1 + lam) ** 2) @ v.T
  _assert_sample_moment(_moment(w), target, 50_000, "second moment")
  f_meas, _ = init.measure_transfer(w.T, v)
  # f^2 is a mean of n squares of N(0, f^2): relative std sqrt(2 / n), f half of it; 5 sigma.
  np.testing.assert_allclose(f_meas, 0.1 + lam, rtol=sampling_tol(np.sqrt(0.5), 50_000))


def test_low_rank_spectrum_samples_its_covariance():
  q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 2)))
  spec = init.Spectrum(q, np.array([2.0, 0.5]), rest_std=0.1)
  w = np.asarray(init.spectrum_init(spec)(jax.random.key(3), (6, 40_000)))
  _assert_sample_moment(_moment(w), spec.covariance(), 40_000, "second moment")


def test_errors_for_shape_psd_and_nan():
  cov = _random_cov(5)
  with pytest.raises(errors.ConfigError, match="fan-in = 4"):
    init.covariance_init(cov)(jax.random.key(0), (4, 3))
  with pytest.raises(errors.ConfigError, match="kh\\*kw\\*C_in = 12"):
    init.covariance_init(cov)(jax.random.key(0), (2, 2, 3, 3))
  with pytest.raises(errors.NumericalError, match="not positive semi-definite"):
    init.covariance_init(np.diag([1.0, -0.5]))
  with pytest.raises(errors.DataError, match="NaN"):
    init.covariance_init(np.array([[1.0, np.nan], [np.nan, 1.0]]))
  with pytest.raises(errors.NumericalError, match="not symmetric"):
    init.covariance_init(np.array([[1.0, 0.5], [0.0, 1.0]]))
  # Round-off negatives are clipped, not refused.
  tiny_neg = np.diag([1.0, 0.5, -1e-9])
  w = init.covariance_init(tiny_neg)(jax.random.key(0), (3, 4))
  assert np.all(np.isfinite(w))


def test_works_as_kernel_init_of_plain_flax_layers():
  cov_conv, cov_dense = _random_cov(2 * 2 * 3), _random_cov(7)

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(
        nn.Conv(8, (2, 2), padding="VALID", kernel_init=init.covariance_init(cov_conv))(x)
      )
      x = x.reshape(x.shape[0], -1)[:, :7]
      return nn.Dense(3, kernel_init=init.covariance_init(cov_dense))(x)

  params = jax.jit(Net().init)(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))["params"]
  assert params["Conv_0"]["kernel"].shape == (2, 2, 3, 8)
  assert params["Dense_0"]["kernel"].shape == (7, 3)


class _Mlp(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(6, name="b_first")(x))  # construction order != alphabetical order
    h = nn.relu(nn.Dense(512, name="a_second")(h))
    return nn.Dense(3, name="head")(h)


def test_layerwise_samples_from_the_new_networks_input_covariance():
  x = np.random.default_rng(0).normal(size=(400, 4)).astype(np.float32) * [3.0, 1.0, 0.5, 0.1]
  model = _Mlp()
  p = model.init(jax.random.key(0), x[:1])["params"]
  assert init.kernel_layers(model, p, x) == ["b_first", "a_second", "head"]
  f = init.TransferFunction([1e-3, 1e3], [0.05, 2.0])
  new = init.sample_layerwise(model, p, x, {"a_second": f}, jax.random.key(1))
  np.testing.assert_array_equal(new["b_first"]["kernel"], p["b_first"]["kernel"])
  # The sampled layer's f in the eigenbasis of ITS inputs (relu(b_first(x))) is f(lambda).
  inputs = init.layer_inputs(model, new, x, "a_second")
  lam, v = init.input_spectrum(np.asarray(inputs))
  f_meas, _ = init.measure_transfer(np.asarray(new["a_second"]["kernel"]).T, v)
  keep = lam > 1e-6 * lam[0]
  # 512 sampled columns: f_meas has relative std sqrt(1 / (2 * 512)); 5 sigma = 0.16.
  np.testing.assert_allclose(f_meas[keep], f(lam[keep]), rtol=sampling_tol(np.sqrt(0.5), 512))
  with pytest.raises(errors.ConfigError, match="no kernel"):
    init.sample_layerwise(model, p, x, {"nope": f}, jax.random.key(1))


def test_low_rank_input_spectrum_matches_full():
  x = np.random.default_rng(1).normal(size=(30, 50)) @ np.diag(np.linspace(0.1, 3, 50))
  lam_f, v_f = init.input_spectrum(x)
  lam_l, v_l = init.input_spectrum(x, max_full_dim=10)
  assert len(lam_l) == 29  # rank n - 1 after centering
  # Two float64 eigensolvers (30 x 30 Gram vs 50 x 50 covariance): eigenvalue errors normwise,
  # <= f64_tol(lam_max, d^2); eigenvectors off by delta <= that / gap, so |cos| - 1 ~ delta^2 on
  # top of a 50-term dot product (tests/tolerances.py).
  lam_tol = float(f64_tol(lam_f[0], 50 * 50))
  np.testing.assert_allclose(lam_l, lam_f[:29], rtol=0, atol=lam_tol)
  delta = lam_tol / np.min(-np.diff(lam_f[:30]))
  np.testing.assert_allclose(
    np.abs(np.sum(v_l * v_f[:, :29], 0)), 1.0, rtol=0, atol=delta**2 + f64_tol(1.0, 50)
  )


def test_weight_scaling_control_restores_norms_and_refreshes_head():
  model = _Mlp()
  x = jnp.ones((1, 4))
  at_init = model.init(jax.random.key(0), x)["params"]
  trained = jax.tree.map(lambda a: 3.0 * a + 0.1, at_init)
  fresh = model.init(jax.random.key(9), x)["params"]
  out = init.weight_scaling_control(trained, at_init, fresh, head="head")
  for layer in ("b_first", "a_second"):
    # float32 rescaling: the norms behind the factor are float32 sums of n squares (relative
    # n u), then one multiply per entry; the test's norms and cosine are float64.
    o, t = (np.asarray(a[layer]["kernel"], np.float64) for a in (out, trained))
    n = o.size
    np.testing.assert_allclose(
      np.linalg.norm(o),
      np.linalg.norm(np.asarray(at_init[layer]["kernel"], np.float64)),
      rtol=f32_tol(1.0, n + 3),
    )
    cos = np.sum(o * t) / (np.linalg.norm(o) * np.linalg.norm(t))
    assert cos == pytest.approx(1.0, abs=f32_tol(1.0, 1))  # direction kept: one rounding each
    np.testing.assert_array_equal(out[layer]["bias"], 0.0)  # zero at init -> zero
  for k in ("kernel", "bias"):
    np.testing.assert_array_equal(out["head"][k], fresh["head"][k])


def test_pooled_transfer_bins_and_whitening_filters():
  f = init.pooled_transfer(
    [np.array([1.0, 2.0]), np.array([1.0, 2.0])], [np.array([0.3, 0.5]), np.array([0.4, 0.5])]
  )
  np.testing.assert_allclose(
    f([1.0, 2.0]), [np.sqrt((0.09 + 0.16) / 2), 0.5], rtol=0, atol=f64_tol(0.5, 4)
  )  # a float64 RMS of 2 values
  binned = init.pooled_transfer([np.geomspace(1e-3, 1, 40)], [np.ones(40)], num_bins=4)
  assert binned.values.size == 4
  cov = _random_cov(4)
  w = init.whitening_filters(cov, 10, eps=0.0)
  assert w.shape == (4, 10) and np.all(w[:, 8:] == 0)
  np.testing.assert_array_equal(w[:, 0], -w[:, 1])  # negation: exact
  # float64 eigh + quadratic forms, relative error <= f64_tol(kappa, d^2) (as test_alignment).
  np.testing.assert_allclose(
    np.diag(w[:, 0:8:2].T @ cov @ w[:, 0:8:2]),
    1.0,
    rtol=0,
    atol=f64_tol(np.linalg.cond(cov), 4 * 4),
  )
