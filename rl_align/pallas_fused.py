"""The paper CNN's conv -> ReLU -> flatten -> dense block as Pallas kernels, for accelerators.

    from rl_align import pallas_fused
    z = pallas_fused.conv_relu_dense(x, conv_kernel, conv_bias, dense_kernel)
    # == relu(conv_valid(x, conv_kernel) + conv_bias).reshape(N, -1) @ dense_kernel    [N, D]
    z = pallas_fused.conv_relu_dense(x, ck, cb, dk, pallas_fused.Plan(block_n=32))  # other tiles

The accelerator counterpart of `rl_align.fused` (which blocks the same op for a CPU cache).  In the
paper CNN (conv 256 3x3 VALID on 32x32 -> dense 64) the ReLU output is [N, 30, 30, 256], 236 MB
per seed at batch 256; XLA writes it to device memory and reads it back several times, which
bounds the unfused step by memory traffic (benchmarks/README.md, H200).  Here the activation
lives only in registers / shared memory of one kernel program, forward AND backward:

- forward, grid (batch blocks, position blocks): a program loops over its positions p, computes
  h = relu(patches[p] @ conv_kernel + bias) for its images and accumulates h @ dense_kernel[p]
  (Flax's flatten order (row, column, channel) makes position p's slice of the dense kernel the
  rows p*F ... p*F + F - 1).  Each program writes one [block_n, D] partial sum; XLA adds the
  position blocks' partials (P / block_p of them: 2 MB per seed for the paper CNN).
- backward (a `jax.custom_vjp`: `pallas_call` has no transpose rule), grid (feature blocks,
  position blocks): a program recomputes h for its features and positions over every image and
  forms the dense kernel gradient h^T g (complete: it owns all images), the pre-activation gradient
  (g @ dense_kernel[p]^T masked by h > 0), and from it partial conv kernel / bias gradients (summed
  by XLA over position blocks) and, only when x is differentiated, the patch gradient (a col2im by
  XLA outside the kernel).  Feature blocks are independent: conv feature f feeds only its own
  column of every position's dense rows.

What does reach device memory: the im2col patches [P, N, k*k*C] (27/256 of the activation for
the paper CNN), the partial sums, and the gradients.  Operands are zero-padded to powers of two
(>= 16: Triton's dot and block sizes); zero filters, zero dense rows/columns and zero images add
nothing to any result (a padded image's cotangent is 0).

Precision: the kernels compute in the inputs' dtype (float32, or bfloat16 for mixed precision)
with float32 accumulators, and return the inputs' dtype.  On CPU the kernels run in Pallas
interpret mode (tests; slow); on a GPU they lower through Pallas's Triton backend
(`Plan.backend="auto"`).  Mosaic GPU (the Hopper default) needs warpgroup-level kernels and is not
written; TPU is not supported (use the conv-as-matmul layouts there).
"""

import dataclasses
import functools
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from rl_align import covariance
from rl_align import errors

BACKENDS = ("auto", "interpret", "triton")
_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class Plan:
  """Tiles and backend of the kernels (hashable: a static argument of the custom VJP).

  block_n: images per forward program and per backward inner step; block_p: the most positions
  per program (the largest divisor of P = H'W' not above it is used); block_f: conv features per
  backward program.  backend: "auto" (interpret on CPU, triton on GPU), "interpret", "triton".
  num_warps / num_stages: Triton's launch parameters.
  """

  block_n: int = 64
  block_p: int = 32
  block_f: int = 64
  backend: str = "auto"
  num_warps: int = 4
  num_stages: int = 2


def _pow2(n: int, at_least: int = 16) -> int:
  return max(at_least, 1 << (max(int(n), 1) - 1).bit_length())


def _divisor_at_most(n: int, cap: int) -> int:
  return max(d for d in range(1, min(n, max(cap, 1)) + 1) if n % d == 0)


@dataclasses.dataclass(frozen=True)
class _Geometry:
  n: int
  k: int
  c: int
  f: int
  ho: int
  wo: int
  d: int  # noqa: E702
  kp: int
  fp: int
  dp: int
  np_: int
  bn: int
  bp: int
  bf: int  # noqa: E702

  @property
  def p(self) -> int:
    return self.ho * self.wo


def _geometry(x, conv_kernel, conv_bias, dense_kernel, plan: Plan) -> _Geometry:
  """Shapes, padded sizes and tiles; ConfigError for inconsistent shapes or a bad plan."""
  if plan.backend not in BACKENDS:
    raise errors.ConfigError(
      f"pallas fused block: backend={plan.backend!r} is unknown. Fix: use one of {BACKENDS}."
    )
  if min(plan.block_n, plan.block_p, plan.block_f) < 1:
    raise errors.ConfigError(f"pallas fused block: block sizes must be >= 1, got {plan}.")
  if x.ndim != 4 or conv_kernel.ndim != 4 or dense_kernel.ndim != 2:
    raise errors.ConfigError(
      f"pallas fused block: expected x [N, H, W, C], conv kernel [k, k, C, F] and dense kernel "
      f"[H'W'F, D], got shapes {x.shape}, {conv_kernel.shape}, {dense_kernel.shape}."
    )
  n, h, w, c = x.shape
  k, f = conv_kernel.shape[0], conv_kernel.shape[-1]
  if conv_kernel.shape[1:3] != (k, c) or conv_bias.shape != (f,) or k > min(h, w):
    raise errors.ConfigError(
      f"pallas fused block: conv kernel {conv_kernel.shape} / bias {conv_bias.shape} do not fit "
      f"x {x.shape}. Fix: a square [k, k, {c}, F] kernel with k <= {min(h, w)} and a [F] bias."
    )
  ho, wo = h - k + 1, w - k + 1
  if dense_kernel.shape[0] != ho * wo * f:
    raise errors.ConfigError(
      f"pallas fused block: dense kernel has {dense_kernel.shape[0]} input "
      f"rows, the flattened conv output {ho}x{wo}x{f} = {ho * wo * f}."
    )
  d = dense_kernel.shape[1]
  fp = _pow2(f)
  bn = min(_pow2(plan.block_n), _pow2(n))
  return _Geometry(
    n=n,
    k=k,
    c=c,
    f=f,
    ho=ho,
    wo=wo,
    d=d,
    kp=_pow2(k * k * c),
    fp=fp,
    dp=_pow2(d),
    np_=-(-n // bn) * bn,
    bn=bn,
    bp=_divisor_at_most(ho * wo, plan.block_p),
    bf=min(_pow2(plan.block_f), fp),
  )


def _resolve_backend(plan: Plan) -> str:
  if plan.backend != "auto":
    return plan.backend
  platform = jax.default_backend()
  if platform == "cpu":
    return "interpret"
  if platform in ("gpu", "cuda", "rocm"):
    return "triton"
  raise errors.ConfigError(
    f"pallas fused block: no kernel for platform {platform!r}. Fix: use "
    "conv_impl='im2col' there (the engine config's conv_impl='auto' picks it)."
  )


def _call_kwargs(plan: Plan, name: str) -> dict[str, Any]:
  backend = _resolve_backend(plan)
  if backend == "interpret":
    return {"interpret": True, "name": name}
  from jax.experimental.pallas import triton as plt  # pylint: disable=g-import-not-at-top

  return {
    "compiler_params": plt.CompilerParams(num_warps=plan.num_warps, num_stages=plan.num_stages),
    "name": name,
  }


def _pad(a, shape):
  pads = [(0, t - s) for s, t in zip(a.shape, shape)]
  return jnp.pad(a, pads) if any(p for _, p in pads) else a


def _operands(x, conv_kernel, conv_bias, dense_kernel, geo: _Geometry, dtype):
  """Position-major patches [P, Np, Kp], conv kernel [Kp, Fp], bias [1, Fp] (float32) and the
  dense kernel as [P, Fp, Dp] (a free reshape of Flax's [(row, col, channel), D] when unpadded)."""
  g = geo
  patches = covariance.extract_patches(x.astype(dtype), g.k)  # [N, P, K]
  pt = _pad(jnp.transpose(patches, (1, 0, 2)), (g.p, g.np_, g.kp))
  ckm = _pad(conv_kernel.astype(dtype).reshape(-1, g.f), (g.kp, g.fp))
  cbm = _pad(conv_bias.astype(_F32).reshape(1, g.f), (1, g.fp))
  dkm = _pad(dense_kernel.astype(dtype).reshape(g.p, g.f, g.d), (g.p, g.fp, g.dp))
  return pt, ckm, cbm, dkm


def _dot(a, b, contract=(1, 0)):
  """a @ b (contract=(1, 0)), a^T @ b ((0, 0)) or a @ b^T ((1, 1)) with a float32 accumulator."""
  return lax.dot_general(
    a, b, (((contract[0],), (contract[1],)), ((), ())), preferred_element_type=_F32
  )


# ----------------------------------------------------------------------------------------------
# Kernels.


def _fwd_kernel(pt_ref, ck_ref, cb_ref, dk_ref, out_ref, *, bp: int):
  """One (batch block, position block): out = sum_p relu(patches_p @ ck + cb) @ dk_p."""
  ck, cb = ck_ref[...], cb_ref[...]

  def position(t, acc):
    h = jnp.maximum(_dot(pt_ref[t], ck) + cb, 0.0).astype(ck.dtype)  # [bn, Fp], on chip
    return acc + _dot(h, dk_ref[t])  # [bn, Dp]

  out_ref[0] = lax.fori_loop(0, bp, position, jnp.zeros(out_ref.shape[1:], _F32))


def _bwd_kernel(
  pt_ref,
  g_ref,
  ck_ref,
  cb_ref,
  dk_ref,
  ddk_ref,
  dck_ref,
  dcb_ref,
  *dpt_ref,
  bp: int,
  bn: int,
  nb: int,
):
  """One (feature block, position block), every image: the dense kernel gradient of its rows,
  partial conv kernel / bias gradients and (if requested) its share of the patch gradient."""
  ck, cb = ck_ref[...], cb_ref[...]  # [Kp, bf], [1, bf]
  cdt = ck.dtype

  def position(t, carry):
    dk_t = dk_ref[t]  # [bf, Dp]

    def images(j, carry):
      ddk, dck, dcb = carry
      rows = pl.ds(pl.multiple_of(j * bn, bn), bn)
      p, g = pt_ref[t, rows, :], g_ref[rows, :]  # [bn, Kp], [bn, Dp]
      pre = _dot(p, ck) + cb  # [bn, bf]
      h = jnp.maximum(pre, 0.0).astype(cdt)
      dpre = jnp.where(pre > 0, _dot(g, dk_t, (1, 1)), 0.0)  # [bn, bf]
      if dpt_ref:
        dpt_ref[0][0, t, rows, :] = _dot(dpre.astype(cdt), ck, (1, 1))  # [bn, Kp]
      return (
        ddk + _dot(h, g, (0, 0)),
        dck + _dot(p, dpre.astype(cdt), (0, 0)),
        dcb + jnp.sum(dpre, axis=0, keepdims=True),
      )

    ddk, dck, dcb = lax.fori_loop(0, nb, images, (jnp.zeros(ddk_ref.shape[1:], _F32), *carry))
    ddk_ref[t] = ddk.astype(ddk_ref.dtype)
    return dck, dcb

  dck, dcb = lax.fori_loop(
    0, bp, position, (jnp.zeros(dck_ref.shape[1:], _F32), jnp.zeros(dcb_ref.shape[1:], _F32))
  )
  dck_ref[0] = dck
  dcb_ref[0] = dcb


# ----------------------------------------------------------------------------------------------
# The op.


def _forward(x, conv_kernel, conv_bias, dense_kernel, plan: Plan):
  dtype = jnp.result_type(x, conv_kernel, dense_kernel)
  g = _geometry(x, conv_kernel, conv_bias, dense_kernel, plan)
  pt, ckm, cbm, dkm = _operands(x, conv_kernel, conv_bias, dense_kernel, g, dtype)
  partial = pl.pallas_call(
    functools.partial(_fwd_kernel, bp=g.bp),
    out_shape=jax.ShapeDtypeStruct((g.p // g.bp, g.np_, g.dp), _F32),
    grid=(g.np_ // g.bn, g.p // g.bp),  # batch blocks vary fastest: they share dk_p in cache
    in_specs=[
      pl.BlockSpec((g.bp, g.bn, g.kp), lambda i, j: (j, i, 0)),
      pl.BlockSpec((g.kp, g.fp), lambda i, j: (0, 0)),
      pl.BlockSpec((1, g.fp), lambda i, j: (0, 0)),
      pl.BlockSpec((g.bp, g.fp, g.dp), lambda i, j: (j, 0, 0)),
    ],
    out_specs=pl.BlockSpec((1, g.bn, g.dp), lambda i, j: (j, i, 0)),
    **_call_kwargs(plan, "conv_relu_dense_fwd"),
  )(pt, ckm, cbm, dkm)
  return partial.sum(0)[: g.n, : g.d].astype(dtype)


def _backward(x, conv_kernel, conv_bias, dense_kernel, cot, plan: Plan, need_dx: bool):
  dtype = jnp.result_type(x, conv_kernel, dense_kernel)
  g = _geometry(x, conv_kernel, conv_bias, dense_kernel, plan)
  pt, ckm, cbm, dkm = _operands(x, conv_kernel, conv_bias, dense_kernel, g, dtype)
  gm = _pad(cot.astype(dtype), (g.np_, g.dp))
  nfb, npb = g.fp // g.bf, g.p // g.bp
  out_shape = [
    jax.ShapeDtypeStruct((g.p, g.fp, g.dp), dtype),
    jax.ShapeDtypeStruct((npb, g.kp, g.fp), _F32),
    jax.ShapeDtypeStruct((npb, 1, g.fp), _F32),
  ]
  out_specs = [
    pl.BlockSpec((g.bp, g.bf, g.dp), lambda f, p: (p, f, 0)),
    pl.BlockSpec((1, g.kp, g.bf), lambda f, p: (p, 0, f)),
    pl.BlockSpec((1, 1, g.bf), lambda f, p: (p, 0, f)),
  ]
  if need_dx:
    out_shape.append(jax.ShapeDtypeStruct((nfb, g.p, g.np_, g.kp), _F32))
    out_specs.append(pl.BlockSpec((1, g.bp, g.np_, g.kp), lambda f, p: (f, p, 0, 0)))
  outs = pl.pallas_call(
    functools.partial(_bwd_kernel, bp=g.bp, bn=g.bn, nb=g.np_ // g.bn),
    out_shape=out_shape,
    grid=(nfb, npb),  # feature blocks vary fastest: they share the patch block in cache
    in_specs=[
      pl.BlockSpec((g.bp, g.np_, g.kp), lambda f, p: (p, 0, 0)),
      pl.BlockSpec((g.np_, g.dp), lambda f, p: (0, 0)),
      pl.BlockSpec((g.kp, g.bf), lambda f, p: (0, f)),
      pl.BlockSpec((1, g.bf), lambda f, p: (0, f)),
      pl.BlockSpec((g.bp, g.bf, g.dp), lambda f, p: (p, f, 0)),
    ],
    out_specs=out_specs,
    **_call_kwargs(plan, "conv_relu_dense_bwd"),
  )(pt, gm, ckm, cbm, dkm)
  ddk, dck, dcb = outs[:3]
  ddk = ddk[:, : g.f, : g.d].reshape(dense_kernel.shape).astype(dense_kernel.dtype)
  dck = dck.sum(0)[: g.k * g.k * g.c, : g.f].reshape(conv_kernel.shape).astype(conv_kernel.dtype)
  dcb = dcb.sum((0, 1))[: g.f].astype(conv_bias.dtype)
  dx = None
  if need_dx:  # col2im: the transpose of the patch extraction, applied to the patch gradient
    dpt = outs[3].sum(0)[:, : g.n, : g.k * g.k * g.c].transpose(1, 0, 2)
    _, unfold = jax.vjp(lambda v: covariance.extract_patches(v, g.k), x.astype(dtype))
    dx = unfold(dpt.astype(dtype))[0].astype(x.dtype)
  return dx, dck, dcb, ddk


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _op(x, conv_kernel, conv_bias, dense_kernel, plan):
  return _forward(x, conv_kernel, conv_bias, dense_kernel, plan)


def _op_fwd(x, conv_kernel, conv_bias, dense_kernel, plan):
  args = (x.value, conv_kernel.value, conv_bias.value, dense_kernel.value)
  return _forward(*args, plan), (args, x.perturbed)


def _op_bwd(plan, res, cot):
  args, need_dx = res
  if isinstance(cot, jax.custom_derivatives.SymbolicZero):
    cot = jnp.zeros(cot.shape, cot.dtype)
  dx, dck, dcb, ddk = _backward(*args, cot, plan, need_dx)
  return dx, dck, dcb, ddk


_op.defvjp(_op_fwd, _op_bwd, symbolic_zeros=True)


def conv_relu_dense(x, conv_kernel, conv_bias, dense_kernel, plan: Plan | None = None):
  """relu(conv_valid(x, conv_kernel) + conv_bias) flattened @ dense_kernel -> [N, D] (no dense bias).

  x [N, H, W, C]; conv_kernel [k, k, C, F] (Flax layout); conv_bias [F]; dense_kernel
  [H'W'F, D] (Flax Dense layout, H' = H - k + 1).  Computes in the common dtype of x and the
  kernels (float32 accumulators) and returns it.  Differentiable in every argument; the input
  gradient is computed only when x is differentiated.
  """
  plan = plan or Plan()
  _geometry(x, conv_kernel, conv_bias, dense_kernel, plan)  # bad shapes: one clear line
  return _op(x, conv_kernel, conv_bias, dense_kernel, plan)
