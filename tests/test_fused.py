"""Tests of the fused conv -> ReLU -> dense block (rl_align.fused) and PaperCNN's conv_impl="fused"."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl_align import errors, fused, models


def _unfused(x, ck, cb, dk):
  h = jax.nn.relu(models.conv_im2col(x, ck) + cb)
  return h.reshape(x.shape[0], -1) @ dk


def _args(seed=0, n=3, side=7, c=2, f=5, d=4):
  ks = jax.random.split(jax.random.key(seed), 5)
  ho = side - 2
  return (jax.random.normal(ks[0], (n, side, side, c)), jax.random.normal(ks[1], (3, 3, c, f)),
          jax.random.normal(ks[2], (f,)), jax.random.normal(ks[3], (ho * ho * f, d)))


@pytest.mark.parametrize("rows", [1, 5])
def test_value_and_every_gradient_match_the_unfused_block(rows):
  args = _args()
  np.testing.assert_allclose(fused.conv_relu_dense(*args, rows), _unfused(*args), rtol=1e-5, atol=1e-5)
  w = jax.random.normal(jax.random.key(9), (3, 4))
  loss = lambda fn: (lambda *a: jnp.sum(jnp.sin(fn(*a)) * w))
  got = jax.grad(loss(lambda *a: fused.conv_relu_dense(*a, rows)), argnums=(0, 1, 2, 3))(*args)
  want = jax.grad(loss(_unfused), argnums=(0, 1, 2, 3))(*args)
  for name, g, h in zip(("x", "conv kernel", "conv bias", "dense kernel"), got, want):
    assert g.shape == h.shape, name
    np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-4, err_msg=name)
    assert float(jnp.abs(h).max()) > 1e-3, name  # the comparison is not trivially 0 == 0


def test_rows_must_divide_the_output_rows():
  with pytest.raises(errors.ConfigError, match="divide"):
    fused.conv_relu_dense(*_args(), 2)        # 5 output rows
  x, ck, cb, dk = _args()
  with pytest.raises(errors.ConfigError, match="dense kernel"):
    fused.conv_relu_dense(x, ck, cb, dk[:-1], 1)


def test_paper_cnn_fused_has_the_same_params_outputs_and_activations():
  x = jax.random.normal(jax.random.key(1), (4, 10, 10, 3))
  lax_m, fused_m = (models.PaperCNN(features=8, hidden=16, conv_impl=i) for i in ("lax", "fused"))
  p = lax_m.init(jax.random.key(0), x)["params"]
  p_fused = fused_m.init_with_output(jax.random.key(0), x, mutable=["params"])[1]["params"]
  jax.tree.map(np.testing.assert_array_equal, p, p_fused)       # same names, same init keys
  np.testing.assert_allclose(fused_m.apply({"params": p}, x), lax_m.apply({"params": p}, x),
                             rtol=1e-5, atol=1e-5)
  acts = models.activations(fused_m, p, x)       # collecting intermediates takes the unfused path
  assert acts["conv_0"]["relu"].shape == (4, 8, 8, 8)


def test_params_only_gradient_skips_nothing_it_needs():
  # Training differentiates the params only (x is data): the op then skips the input gradient.
  args = _args(seed=1)
  loss = lambda fn: (lambda ck, cb, dk: jnp.sum(jnp.cos(fn(args[0], ck, cb, dk))))
  got = jax.jit(jax.grad(loss(lambda *a: fused.conv_relu_dense(*a, 1)), argnums=(0, 1, 2)))(*args[1:])
  want = jax.grad(loss(_unfused), argnums=(0, 1, 2))(*args[1:])
  for g, h in zip(got, want):
    np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-4)


def test_block_rows_fits_the_budget():
  assert fused.block_rows(256, 30, 30, 256) == 1            # paper CNN: 7.9 MB per row
  assert fused.block_rows(128, 14, 14, 64) == 14            # small inputs: one block
  assert fused.block_rows(1024, 7, 7, 512) == 1             # over budget: still at least 1
  assert 30 % fused.block_rows(64, 30, 30, 256) == 0
