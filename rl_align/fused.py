"""The paper CNN's first block, conv -> ReLU -> flatten -> dense, fused and blocked over output rows.

    z = conv_relu_dense(x, conv_kernel, conv_bias, dense_kernel, rows=1)
    # == relu(conv_valid(x, conv_kernel) + conv_bias).reshape(N, -1) @ dense_kernel

Why: in the paper CNN (conv 256 3x3 VALID on 32x32 -> dense 64) the ReLU output [N, 30, 30, 256]
is 236 MB at batch 256 and the dense layer's weight 59 MB; the unfused step writes and re-reads the
activation several times, so XLA:CPU runs it memory-bound (16-19% of the fp32 matmul peak).
Here the contraction over the flattened positions is accumulated over blocks of `rows` output rows
(a `lax.scan`): each block's activation (7.9 MB for one row at batch 256) is made, used and dropped
while it is in cache, and the backward pass (a custom VJP, one more scan) recomputes it instead of
storing it.  Flax's flatten order (row, column, channel) makes a row block a contiguous slice of the
dense kernel's rows.  Same params, same function: only the summation order differs (float32
round-off, tested against the unfused autodiff gradient).  `benchmarks/README.md` has the speed.
Inputs in a lower precision (bfloat16: mixed precision) are multiplied in it, while the sums over
row blocks run in float32 and the results come back in the inputs' dtype.  The accelerator
counterpart is `rl_align.pallas_fused`.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp

from rl_align import covariance
from rl_align import errors


BLOCK_BYTES = 8 * 2**20  # a row block's activation fits a 32 MB L3 with room to spare


def block_rows(
  n: int, out_rows: int, out_cols: int, features: int, budget: int = BLOCK_BYTES
) -> int:
  """The largest divisor of out_rows whose float32 block n x rows x out_cols x features fits budget
  (at least 1).  Measured (benchmarks/README.md): the paper CNN at batch 256 runs best at 1 row
  (7.9 MB), 161 vs 182 ms per step at 2 rows."""
  per_row = 4 * n * out_cols * features
  fits = [d for d in range(1, out_rows + 1) if out_rows % d == 0 and d * per_row <= budget]
  return max(fits, default=1)


def _shapes(x, conv_kernel, dense_kernel, rows: int):
  k, f = conv_kernel.shape[0], conv_kernel.shape[-1]
  n, h, w, _ = x.shape
  ho, wo = h - k + 1, w - k + 1
  if rows < 1 or ho % rows:
    raise errors.ConfigError(
      f"fused conv block: rows={rows} must divide the {ho} output rows. "
      f"Fix: use a divisor of {ho} (1 is always valid)."
    )
  if dense_kernel.shape[0] != ho * wo * f:
    raise errors.ConfigError(
      f"fused conv block: dense kernel has {dense_kernel.shape[0]} input "
      f"rows, the flattened conv output {ho}x{wo}x{f} = {ho * wo * f}."
    )
  return n, k, f, wo, ho // rows


def _block_patches(x, k: int, i, rows: int, wo: int):
  """Patches [N, rows, Wo, k*k*C] of output rows i*rows ... i*rows + rows - 1."""
  xs = lax.dynamic_slice_in_dim(x, i * rows, rows + k - 1, axis=1)
  return covariance.extract_patches(xs, k).reshape(x.shape[0], rows, wo, -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def conv_relu_dense(x, conv_kernel, conv_bias, dense_kernel, rows: int = 1):
  """relu(conv_valid(x, conv_kernel) + conv_bias) flattened @ dense_kernel -> [N, D] (no dense bias).

  x [N, H, W, C]; conv_kernel [k, k, C, F] (Flax layout); conv_bias [F]; dense_kernel
  [Ho*Wo*F, D] (Flax Dense layout); rows divides Ho = H - k + 1.
  """
  n, k, f, wo, nb = _shapes(x, conv_kernel, dense_kernel, rows)
  ckm = conv_kernel.reshape(-1, f)
  blocks = dense_kernel.reshape(nb, rows * wo * f, -1)

  def body(acc, inp):
    i, w = inp
    h = jax.nn.relu(_block_patches(x, k, i, rows, wo) @ ckm + conv_bias)
    return acc + h.reshape(n, -1) @ w, None

  dtype = jnp.result_type(x, dense_kernel)
  acc0 = jnp.zeros((n, dense_kernel.shape[1]), _accumulator(dtype))
  return lax.scan(body, acc0, (jnp.arange(nb), blocks))[0].astype(dtype)


def _accumulator(dtype):
  """float32 for sums of lower-precision (bfloat16) terms, else the dtype itself."""
  return jnp.promote_types(dtype, jnp.float32)


def _values(*args):
  """(values, whether x is differentiated) of custom-VJP primals (symbolic_zeros=True)."""
  return tuple(a.value for a in args), args[0].perturbed


def _cotangent(g):
  if isinstance(g, jax.custom_derivatives.SymbolicZero):
    return jnp.zeros(g.shape, g.dtype)
  return g


def _fwd(x, conv_kernel, conv_bias, dense_kernel, rows):
  args, need_dx = _values(x, conv_kernel, conv_bias, dense_kernel)
  return conv_relu_dense(*args, rows), (args, {"need_dx": ()} if need_dx else {})


def _bwd(rows, res, g):
  """One scan over the row blocks: recompute the block, then its gradient products.  The input
  gradient (a col2im) only when x is differentiated, i.e. not in training, where x is data."""
  (x, conv_kernel, conv_bias, dense_kernel), flags = res
  need_dx, g = "need_dx" in flags, _cotangent(g)
  n, k, f, wo, nb = _shapes(x, conv_kernel, dense_kernel, rows)
  d = dense_kernel.shape[1]
  ckm = conv_kernel.reshape(-1, f)
  blocks = dense_kernel.reshape(nb, rows * wo * f, d)
  window = rows + k - 1

  def body(carry, inp):
    dck, dcb, dx = carry
    i, w = inp
    xs = lax.dynamic_slice_in_dim(x, i * rows, window, axis=1)
    patches, unfold = jax.vjp(
      lambda v: covariance.extract_patches(v, k).reshape(n, rows, wo, -1), xs
    )
    pre = patches @ ckm + conv_bias
    h = jax.nn.relu(pre).reshape(n, -1)
    dw = g.T @ h  # [D, rows*Wo*F]: the fast layout on CPU
    dpre = jnp.where(pre > 0, (g @ w.T).reshape(pre.shape), 0.0)
    dpre2 = dpre.reshape(-1, f)
    dck = dck + patches.reshape(dpre2.shape[0], -1).T @ dpre2
    dcb = dcb + dpre2.sum(axis=0)
    if need_dx:  # add this window's input gradient at input rows i*rows ...
      old = lax.dynamic_slice_in_dim(dx, i * rows, window, axis=1)
      dx = lax.dynamic_update_slice_in_dim(dx, old + unfold(dpre @ ckm.T)[0], i * rows, axis=1)
    return (dck, dcb, dx), dw

  zeros = lambda a: jnp.zeros(a.shape, _accumulator(a.dtype))
  carry0 = (zeros(ckm), zeros(conv_bias), zeros(x) if need_dx else ())
  (dck, dcb, dx), dws = lax.scan(body, carry0, (jnp.arange(nb), blocks))
  ddk = dws.transpose(0, 2, 1).reshape(dense_kernel.shape).astype(dense_kernel.dtype)
  dx = dx.astype(x.dtype) if need_dx else None
  return (
    dx,
    dck.reshape(conv_kernel.shape).astype(conv_kernel.dtype),
    dcb.astype(conv_bias.dtype),
    ddk,
  )


conv_relu_dense.defvjp(_fwd, _bwd, symbolic_zeros=True)
