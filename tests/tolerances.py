"""Float tolerances for the tests, derived from rounding error and from sampling error.

    from tests.tolerances import f32_tol, sampling_tol
    atol = f32_tol(np.abs(a) @ np.abs(b), a.shape[1])       # a @ b in float32, any summation order
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    assert abs(x.mean() - mu) < sampling_tol(sigma, n)       # a statistical check: z * sigma / sqrt(n)

Rounding.  A floating-point sum of n terms, computed in ANY order (sequential, pairwise, blocked,
SIMD lanes, split over threads), is within (n - 1) * u * sum_i |term_i| of the exact sum, u = eps / 2
the unit round-off (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., eq. 4.4 and
§3.1 for dot products).  We use this worst-case LINEAR bound, not the typical sqrt(n) random-walk
estimate, because it holds for every summation order and therefore on every CPU, BLAS and XLA
build: the test cannot fail because another machine blocks its loops differently.  Two
implementations that each obey it differ by at most twice the bound (u * 2 = eps), hence

    tol = safety * eps * magnitude * reduction_len

- `magnitude` bounds sum_i |term_i|, NOT the size of the result: with cancellation the result can be
  small while its error scales with the terms (tests/test_fused.py failed on an AMD EPYC exactly
  there: an entry of 0.51 off by 2.1e-4 among entries reaching 13).  For a product A @ B it is
  |A| @ |B|; for a small network it is the same network run on absolute values (inputs and weights;
  ReLU is the identity there), and for a gradient the backward pass of that network.
- `reduction_len` is the length of the chain of reductions that feeds one value: to first order the
  errors of successive reductions add (a conv over 18 terms then a dense over 125: 18 + 125), each
  carried forward by the absolute values after it -- which `magnitude` from the absolute-value
  network includes.  Elementwise ops (add, ReLU, multiply) add one rounding each: count them too.
- `safety` (default 2) covers what the first-order bound leaves out (products of roundings, the
  rounding of the inputs themselves); it is NOT a fudge for a measured failure.

A real bug (a wrong index, a missing term, the wrong seed) gives errors of the order of the values
themselves, 1e3-1e6 times these tolerances, so they stay sharp.  Comparisons whose chain is long
or nonlinear (a gradient through several layers, a loss through sin/cos) run in float64 instead
(`with jax.enable_x64(True):`, asserting the result's dtype), where the same bound is ~1e-13.

Sampling.  A statistical check on an average of n independent samples of standard deviation sigma
uses `sampling_tol(sigma, n, z)` = z * sigma / sqrt(n): at z = 5 a correct implementation fails it
with probability < 1e-6 for any seed (Gaussian tail; Chebyshev still gives < 4% for any
distribution), while a bug that shifts the mean by more than the tolerance is caught.

Same training, another program.  The engine's guarantees (a packed member equals its point alone,
host-fed equals device-resident, 2 processes equal 1, a resumed run equals an uninterrupted one)
are bitwise where both runs execute the same compiled per-member arithmetic: on XLA:CPU, whose
layouts (`map`, `map_fused`) run each member as its own loop body.  Accelerators pick `vmap`
layouts, the Pallas kernels and autotuned library kernels, whose summation order may change with
the member count or the process; there `assert_same_run` / `assert_same_accuracy` use the rounding
bound of the default matmul (`matmul_eps`: TF32 on NVIDIA GPUs unless
JAX_DEFAULT_MATMUL_PRECISION=highest) over the run's steps (`f32_run_tol`).
"""

import jax
import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7 = 2u
EPS64 = float(np.finfo(np.float64).eps)  # 2.22e-16
TF32_EPS = 2.0**-10  # TF32: float32 with 10 explicit mantissa bits
BF16_EPS = 2.0**-7  # bfloat16: 7 explicit mantissa bits


def rounding_tol(eps: float, magnitude, reduction_len: int, safety: float = 2.0):
  """safety * eps * magnitude * reduction_len: two any-order float sums of `reduction_len` terms
  whose absolute values sum to `magnitude` (scalar or array, broadcast with the values) differ by
  at most this (module docstring)."""
  if reduction_len < 1:
    raise ValueError(f"reduction_len must be >= 1, got {reduction_len}")
  return safety * eps * np.asarray(magnitude, np.float64) * reduction_len


def f32_tol(magnitude, reduction_len: int, safety: float = 2.0):
  """The float32 bound (eps 1.19e-7): see rounding_tol."""
  return rounding_tol(EPS32, magnitude, reduction_len, safety)


def f64_tol(magnitude, reduction_len: int, safety: float = 2.0):
  """The float64 bound (eps 2.2e-16): see rounding_tol."""
  return rounding_tol(EPS64, magnitude, reduction_len, safety)


def f32_run_tol(param_scale, steps: int, chain_per_step: int, safety: float = 2.0):
  """Two float32 training runs that differ only in summation order (another seed layout, gradient
  micro-batches, a seed alone or inside a batch): f32_tol(param_scale, steps * chain_per_step).

  Each step rounds along `chain_per_step` reductions and elementwise ops (forward and backward
  through every layer, the sum over the batch, the optimizer's few updates); their terms are
  bounded by the parameter scale max |theta| (in these short runs an update lr * |g| is smaller
  than theta), and to first order the errors of successive steps add.  Left out: amplification by
  the training dynamics, which over the few (<= 12) steps these tests run stays near 1 (measured
  gaps <= 6e-8 on an AMD EPYC, ~1000x under this bound).  A wrong seed, data order or missing term
  moves the parameters by O(0.1-1), another >= 100x above it."""
  return f32_tol(param_scale, steps * chain_per_step, safety)


def sampling_tol(sigma, n: int, z: float = 5.0):
  """z * sigma / sqrt(n): the half-width a mean of n independent samples of std sigma stays within
  (z = 5: fails with probability < 1e-6 for Gaussian averages)."""
  return z * np.asarray(sigma, np.float64) / np.sqrt(n)


def assert_close(got, want, atol, err_msg=""):
  """np.testing.assert_allclose(got, want, rtol=0, atol=atol) for an array-valued atol (each entry
  its own bound), with the worst ratio |got - want| / atol in the message."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  atol = np.broadcast_to(np.asarray(atol, np.float64), np.broadcast_shapes(got.shape, want.shape))
  ratio = np.abs(got - want) / np.maximum(atol, np.finfo(np.float64).tiny)
  worst = float(ratio.max()) if ratio.size else 0.0
  assert np.all(np.abs(got - want) <= atol), (
    f"{err_msg}: |got - want| exceeds the rounding bound, worst ratio {worst:.3g} at "
    f"{np.unravel_index(int(ratio.argmax()), ratio.shape)}"
  )


def matmul_eps() -> float:
  """The eps of a float32 matmul at this process's default precision: float32 on CPU and wherever
  jax_default_matmul_precision is "highest" / "float32"; else TF32 on GPUs (XLA's default float32
  dot rounds its inputs to TF32 on NVIDIA Ampere and later; an older GPU's full float32 is within
  it) and bfloat16 on TPUs (one bfloat16 pass).  The engine's matmul_precision="default" follows
  JAX_DEFAULT_MATMUL_PRECISION, so the GPU test run (benchmarks/gpu_throughput.sh) gets EPS32."""
  backend = jax.default_backend()
  if backend == "cpu" or jax.config.jax_default_matmul_precision in ("highest", "float32"):
    return EPS32
  return BF16_EPS if backend == "tpu" else TF32_EPS


def bitwise_backend() -> bool:
  """True where two runs of the same training program are bitwise equal with the auto layouts:
  XLA:CPU (member-major `map` / `map_fused`, no autotuning).  Elsewhere: `matmul_eps` bounds."""
  return jax.default_backend() == "cpu"


def assert_same_run(
  got, want, steps: int, chain_per_step: int, err_msg: str = "", bitwise: bool | None = None
) -> float:
  """The params (pytrees or arrays) of two runs of the same training: bitwise if `bitwise` (None:
  `bitwise_backend()`), else within rounding_tol(matmul_eps(), max |want|, steps * chain_per_step)
  (`f32_run_tol`'s derivation with the default matmul's eps).  Returns the tolerance
  (0: bitwise)."""
  pairs = list(zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True))
  exact = bitwise_backend() if bitwise is None else bitwise
  scale = max(float(np.abs(np.asarray(w)).max()) for _, w in pairs)
  tol = 0.0 if exact else float(rounding_tol(matmul_eps(), scale, steps * chain_per_step))
  for i, (g, w) in enumerate(pairs):
    if exact:
      np.testing.assert_array_equal(g, w, err_msg=f"{err_msg} leaf {i} (bitwise on this backend)")
    else:
      assert_close(g, w, tol, f"{err_msg} leaf {i}")
  return tol


def assert_same_accuracy(
  got, want, n_examples: int, err_msg: str = "", bitwise: bool | None = None
) -> None:
  """Accuracies of two runs of the same training: equal if `bitwise` (None: `bitwise_backend()`),
  else within one example of n_examples per entry (a rounding-level change of the logits moves an
  argmax only at a near-tie; more than one per evaluation set would be a real difference)."""
  exact = bitwise_backend() if bitwise is None else bitwise
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  if exact:
    np.testing.assert_array_equal(got, want, err_msg=f"{err_msg} (bitwise on this backend)")
  else:
    assert_close(got, want, 1.0 / n_examples + EPS32, err_msg)
