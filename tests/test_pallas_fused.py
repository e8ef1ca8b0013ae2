"""Tests of the Pallas conv -> ReLU -> dense block (rl_align.pallas_fused), in interpret mode on CPU.

The kernels run in float32 (what they run in on a GPU); the reference is the unfused block in
float64.  Tolerances: tests/tolerances.py's any-order rounding bound, f32_tol(magnitude, chain):
`magnitude` is the same computation on absolute values (it bounds sum |term| at every step;
ReLU is the identity there) and `chain` the reductions feeding one entry plus a few elementwise
roundings.  A wrong block index, a dropped bias or a missing partial sum misses it by >= 1e4x.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl_align import errors, models, pallas_fused
from tests.tolerances import assert_close, f32_tol

# Small tiles, so that every padding and every grid axis has more than one block: batch 20 in
# blocks of 16 (padded to 32), 36 positions in blocks of 6, 20 features padded to 32 in two
# backward blocks of 16, k*k*C = 18 padded to 32, D = 3 padded to 16.
PLAN = pallas_fused.Plan(block_n=16, block_p=8, block_f=16, backend="interpret")


def _unfused(x, ck, cb, dk):
  h = jax.nn.relu(models.conv_im2col(x, ck) + cb)
  return h.reshape(x.shape[0], -1) @ dk


def _args(seed=0, n=20, side=8, c=2, f=20, d=3):
  """float32 numpy (x, conv kernel, conv bias, dense kernel): no eager JAX op to compile."""
  rng = np.random.default_rng(seed)
  ho = side - 2
  shapes = ((n, side, side, c), (3, 3, c, f), (f,), (ho * ho * f, d))
  x, ck, cb, dk = (rng.standard_normal(s, dtype=np.float32) for s in shapes)
  return x, ck, cb, dk / 8


def _pre_activation_margin(args):
  """min |conv + bias| over every entry: when it exceeds the float32 error of the conv, the
  float32 kernels and the float64 reference take the same ReLU branch everywhere."""
  x, ck, cb, _ = args
  pre, mag = jax.jit(
    lambda x, ck, cb: (
      models.conv_im2col(x, ck) + cb,
      models.conv_im2col(jnp.abs(x), jnp.abs(ck)) + jnp.abs(cb),
    )
  )(x, ck, cb)
  return float(np.min(np.abs(np.asarray(pre)) - f32_tol(np.asarray(mag), 18 + 1)))


def test_value_and_every_gradient_equal_the_unfused_block():
  args32 = _args()
  assert _pre_activation_margin(args32) > 0  # a precondition of the comparison
  cot32 = np.random.default_rng(7).standard_normal((20, 3), dtype=np.float32)
  fn = jax.jit(lambda *a: jax.vjp(lambda *b: pallas_fused.conv_relu_dense(*b, PLAN), *a))
  value, vjp = fn(*args32)
  got = jax.jit(vjp)(cot32)
  assert value.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in got)
  with jax.enable_x64(True):
    reference = jax.jit(lambda cot, *a: (lambda v, vjp: (v, vjp(cot)))(*jax.vjp(_unfused, *a)))
    args = [a.astype(np.float64) for a in args32]
    want_value, want = reference(cot32.astype(np.float64), *args)
    z_abs, g_abs = reference(np.abs(cot32).astype(np.float64), *[np.abs(a) for a in args])
    assert want_value.dtype == jnp.float64
  # Chains: forward conv (18) + dense (36*20) + bias, ReLU, cast; a gradient adds the dense^T
  # (3) and, for the conv kernel/bias and x, the sums over images and positions (20*36) and the
  # conv^T (20).
  fwd = 18 + 36 * 20 + 3
  chains = {
    "x": fwd + 3 + 20 + 2,
    "conv kernel": fwd + 3 + 20 * 36 + 2,
    "conv bias": fwd + 3 + 20 * 36 + 2,
    "dense kernel": fwd + 20 + 2,
  }
  assert_close(value, want_value, f32_tol(z_abs, fwd), "value")
  for (name, chain), g, h, bound in zip(chains.items(), got, want, g_abs):
    assert g.shape == h.shape, name
    assert_close(g, h, f32_tol(bound, chain), name)
    assert float(np.abs(np.asarray(h)).max()) > 1e-2, name  # not a trivial 0 == 0


def test_params_only_gradient_and_vmap_over_seeds():
  # Training differentiates the params only (x is data: no patch gradient is computed), with a
  # leading seed axis under vmap (the engine's vmap layouts): each seed equals its lone run.
  seeds = [_args(seed=s, n=4, f=6) for s in range(2)]
  x = seeds[0][0]
  grad = lambda fn, x: jax.grad(
    lambda ck, cb, dk: jnp.sum(fn(x, ck, cb, dk) * jnp.arange(3.0)), argnums=(0, 1, 2)
  )
  pallas = lambda *a: pallas_fused.conv_relu_dense(*a, PLAN)
  stacked = [np.stack([s[i] for s in seeds]) for i in (1, 2, 3)]
  got = jax.jit(jax.vmap(grad(pallas, x)))(*stacked)
  # The unfused reference per seed, and the bound: the same gradient on |x| and |params|.
  want = jax.jit(jax.vmap(grad(_unfused, x)))(*stacked)
  g_abs = jax.jit(jax.vmap(grad(_unfused, np.abs(x))))(*[np.abs(a) for a in stacked])
  for name, g, h, bound in zip(("conv kernel", "conv bias", "dense kernel"), got, want, g_abs):
    assert_close(g, h, f32_tol(bound, 18 + 36 * 6 + 3 + 4 * 36 + 6), name)


def test_paper_cnn_pallas_has_the_same_params_and_logits():
  x = np.random.default_rng(1).standard_normal((4, 8, 8, 3), dtype=np.float32)
  lax_m, pallas_m = (models.PaperCNN(features=8, hidden=16, conv_impl=i) for i in ("lax", "pallas"))
  # Same names and shapes (the values come from the same _Params code as conv_impl="fused",
  # whose init equality tests/test_fused.py checks).
  shapes = jax.eval_shape(lax_m.init, jax.random.key(0), x)["params"]
  assert jax.tree.map(
    lambda a: a.shape, jax.eval_shape(pallas_m.init, jax.random.key(0), x)["params"]
  ) == jax.tree.map(lambda a: a.shape, shapes)
  rng = np.random.default_rng(0)
  p = jax.tree.map(lambda a: rng.standard_normal(a.shape, dtype=np.float32) / 4, shapes)
  got, want, magnitude = jax.jit(
    lambda p: (
      pallas_m.apply({"params": p}, x),
      lax_m.apply({"params": p}, x),
      lax_m.apply({"params": jax.tree.map(jnp.abs, p)}, jnp.abs(x)),
    )
  )(p)
  # The chain: conv (27), dense (6*6*8), head (16) plus 4 elementwise roundings.
  assert_close(got, want, f32_tol(magnitude, 27 + 6 * 6 * 8 + 16 + 4), "logits")
  assert pallas_m.blocks_in_cache  # no gradient micro-batches on top of the kernel


def test_kernels_lower_to_triton_for_a_gpu_without_one():
  # Pallas lowers its kernels to Triton IR in Python, so lowering for CUDA runs here: it checks
  # every op, block shape and dtype the Triton backend accepts (Triton's own compile, PTX and the
  # run need the GPU).  Paper-CNN shapes, bfloat16, forward and the params-only backward.
  plan = pallas_fused.Plan(backend="triton")
  sds = lambda *s: jax.ShapeDtypeStruct(s, jnp.bfloat16)
  x = np.zeros((256, 32, 32, 3), jnp.bfloat16)
  ck, cb, dk = sds(3, 3, 3, 256), sds(256), sds(30 * 30 * 256, 64)
  grad = jax.grad(
    lambda ck, cb, dk: jnp.sum(
      pallas_fused.conv_relu_dense(x, ck, cb, dk, plan).astype(jnp.float32)
    ),
    argnums=(0, 1, 2),
  )
  text = jax.jit(grad).trace(ck, cb, dk).lower(lowering_platforms=("cuda",)).as_text()
  assert text.count("xla.gpu.triton") == 2  # the forward and the backward kernel


def test_bad_shapes_and_backend_are_one_clear_error():
  x, ck, cb, dk = _args(n=2, f=4)
  with pytest.raises(errors.ConfigError, match="dense kernel has"):
    pallas_fused.conv_relu_dense(x, ck, cb, dk[:-1], PLAN)
  with pytest.raises(errors.ConfigError, match="do not fit"):
    pallas_fused.conv_relu_dense(x, ck[:, :, :1], cb, dk, PLAN)
  with pytest.raises(errors.ConfigError, match="backend='cuda' is unknown"):
    pallas_fused.conv_relu_dense(x, ck, cb, dk, pallas_fused.Plan(backend="cuda"))
