"""Tests of the fused conv -> ReLU -> dense block (rl_align.fused) and PaperCNN's conv_impl="fused"."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl_align import errors, fused, models
from tests.tolerances import assert_close, f64_tol


def _unfused(x, ck, cb, dk):
  h = jax.nn.relu(models.conv_im2col(x, ck) + cb)
  return h.reshape(x.shape[0], -1) @ dk


def _args(seed=0, n=3, side=7, c=2, f=5, d=4):
  ks = jax.random.split(jax.random.key(seed), 5)
  ho = side - 2
  return (
    jax.random.normal(ks[0], (n, side, side, c)),
    jax.random.normal(ks[1], (3, 3, c, f)),
    jax.random.normal(ks[2], (f,)),
    jax.random.normal(ks[3], (ho * ho * f, d)),
  )


# The comparisons below run in float64 (jax.enable_x64): in float32 the loss's sin/cos carries the
# forward round-off of z (sums of up to 1200 in |terms| for values up to 68) into gradient errors of
# 2e-4 on an AMD EPYC, and the any-order bound of tests/tolerances.py is then ~1, useless.  In
# float64 the same bound is 1e-10..1.5e-8 against gradients up to 17 (measured gaps <= 1e-4 of it); a
# wrong row index or a dropped bias misses it by > 1e9x.


def _chain_len(args):
  """Reductions feeding one gradient entry: conv (k*k*C), dense (Ho*Wo*F), dense^T (D), conv^T
  (k*k*F), plus 4 elementwise roundings (bias, ReLU mask, loss derivative, accumulation)."""
  x, ck, _, dk = args
  return ck.shape[0] * ck.shape[1] * (ck.shape[2] + ck.shape[3]) + dk.shape[0] + dk.shape[1] + 4


def _bounds(args, w):
  """(value bound, gradient bounds) for the rounding tolerance: the block run on |inputs| bounds
  sum |term| of the forward chain (ReLU is the identity there); the gradient of sum(|w| * that)
  bounds the backward chain's.  The loss derivative f'(z) * w (|f''| <= 1) carries z's error
  (<= u * chain * z_abs) into the backward chain: hence the factor (1 + max z_abs)."""
  absargs = [jnp.abs(a) for a in args]
  z_abs = _unfused(*absargs)
  g_abs = jax.grad(lambda *a: jnp.sum(_unfused(*a) * jnp.abs(w)), argnums=(0, 1, 2, 3))(*absargs)
  return z_abs, [g * (1.0 + jnp.max(z_abs)) for g in g_abs]


@pytest.mark.parametrize("rows", [1, 5])
def test_value_and_every_gradient_match_the_unfused_block(rows):
  with jax.enable_x64(True):
    args = _args()
    w = jax.random.normal(jax.random.key(9), (3, 4))
    z_abs, g_abs = _bounds(args, w)
    n = _chain_len(args)
    value = fused.conv_relu_dense(*args, rows)
    assert value.dtype == jnp.float64  # really computed in float64
    assert_close(value, _unfused(*args), f64_tol(z_abs, n), "value")
    loss = lambda fn: lambda *a: jnp.sum(jnp.sin(fn(*a)) * w)
    got = jax.grad(loss(lambda *a: fused.conv_relu_dense(*a, rows)), argnums=(0, 1, 2, 3))(*args)
    want = jax.grad(loss(_unfused), argnums=(0, 1, 2, 3))(*args)
    for name, g, h, bound in zip(
      ("x", "conv kernel", "conv bias", "dense kernel"), got, want, g_abs
    ):
      assert g.shape == h.shape and g.dtype == h.dtype == jnp.float64, name
      assert_close(g, h, f64_tol(bound, n), name)
      assert float(jnp.abs(h).max()) > 1e-3, name  # the comparison is not trivially 0 == 0


def test_rows_must_divide_the_output_rows():
  with pytest.raises(errors.ConfigError, match="divide"):
    fused.conv_relu_dense(*_args(), 2)  # 5 output rows
  x, ck, cb, dk = _args()
  with pytest.raises(errors.ConfigError, match="dense kernel"):
    fused.conv_relu_dense(x, ck, cb, dk[:-1], 1)


def test_paper_cnn_fused_has_the_same_params_outputs_and_activations():
  x = jax.random.normal(jax.random.key(1), (4, 10, 10, 3))
  lax_m, fused_m = (models.PaperCNN(features=8, hidden=16, conv_impl=i) for i in ("lax", "fused"))
  p = lax_m.init(jax.random.key(0), x)["params"]
  p_fused = fused_m.init_with_output(jax.random.key(0), x, mutable=["params"])[1]["params"]
  jax.tree.map(np.testing.assert_array_equal, p, p_fused)  # same names, same init keys
  with jax.enable_x64(True):  # float64: the bound is ~1e-12 on logits ~1 (see _bounds)
    x64, p64 = jnp.asarray(x, jnp.float64), jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), p)
    got = fused_m.apply({"params": p64}, x64)
    assert got.dtype == jnp.float64
    # Bound: the lax model on |x|, |params| (ReLU = identity) bounds sum |term| along the chain of
    # conv (27), dense (8*8*8), dense (16) reductions plus 4 elementwise roundings.
    absp = jax.tree.map(jnp.abs, p64)
    bound = f64_tol(lax_m.apply({"params": absp}, jnp.abs(x64)), 27 + 8 * 8 * 8 + 16 + 4)
    assert_close(got, lax_m.apply({"params": p64}, x64), bound, "logits")
  acts = models.activations(fused_m, p, x)  # collecting intermediates takes the unfused path
  assert acts["conv_0"]["relu"].shape == (4, 8, 8, 8)


def test_params_only_gradient_skips_nothing_it_needs():
  # Training differentiates the params only (x is data): the op then skips the input gradient.
  with jax.enable_x64(True):  # float64, as in the first test
    args = _args(seed=1)
    loss = lambda fn: lambda ck, cb, dk: jnp.sum(jnp.cos(fn(args[0], ck, cb, dk)))
    got = jax.jit(jax.grad(loss(lambda *a: fused.conv_relu_dense(*a, 1)), argnums=(0, 1, 2)))(
      *args[1:]
    )
    want = jax.grad(loss(_unfused), argnums=(0, 1, 2))(*args[1:])
    _, g_abs = _bounds(args, jnp.ones((3, 4)))  # loss sum(cos z): |cos'| <= 1, weights 1
    for name, g, h, bound in zip(
      ("conv kernel", "conv bias", "dense kernel"), got, want, g_abs[1:]
    ):
      assert g.dtype == jnp.float64, name
      assert_close(g, h, f64_tol(bound, _chain_len(args)), name)


def test_block_rows_fits_the_budget():
  assert fused.block_rows(256, 30, 30, 256) == 1  # paper CNN: 7.9 MB per row
  assert fused.block_rows(128, 14, 14, 64) == 14  # small inputs: one block
  assert fused.block_rows(1024, 7, 7, 512) == 1  # over budget: still at least 1
  assert 30 % fused.block_rows(64, 30, 30, 256) == 0
