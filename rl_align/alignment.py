"""Eigenbases, misalignment, the transfer function f and subspace overlaps (the paper's
section 2 and Definition 3).

Everything here is float64 NumPy on the host (matrices are at most a few thousand wide)::

    from rl_align import alignment, covariance
    lam, V = alignment.eigh_desc(cov_x)                       # descending eigenpairs of Sigma_x
    cov_w = covariance.weight_covariance(kernels)             # E[w w^T] of first-layer filters
    m = alignment.misalignment(cov_w, V)                      # ~0 when Sigma_w = g(Sigma_x)
    m_rand = alignment.misalignment(cov_w, alignment.random_basis(0, len(lam)))
    floor, floor_std = alignment.finite_sample_floor(       # M of a perfectly aligned Sigma_w
        V, alignment.variances_in_basis(cov_w, V), n_samples=256, key_or_seed=0)
    lam, f = alignment.transfer_function(cov_x, cov_w)       # f_i = sqrt(v_i^T Sigma_w v_i)
    groups = alignment.group_degenerate(lam, rtol=1e-3)      # near-equal eigenvalues, in order
    cos = alignment.principal_cosines(V, V_w, k=5)           # top-5 eigenspaces: cos of angles
    ov = alignment.subspace_overlap(V, V_w, k=5)             # mean cos^2; random: k / d

Misalignment (the paper's section 2): M = sum_i ( sqrt((v_i^T S v_i)(v_i^T S^-1 v_i)) - 1 ), S = Sigma_w.
Each term is >= 0 (Cauchy-Schwarz) and 0 iff v_i is an eigenvector of S; M is invariant to
scaling S.  S^-1 v is never formed: v^T S^-1 v = ||L^-1 v||^2 with S = L L^T (Cholesky).
"""

import numbers

import numpy as np
import scipy.linalg

from rl_align import errors

_SYMMETRY_RTOL = 1e-6  # |A - A^T| <= rtol * max|A| counts as symmetric (float32 round-off)
_UNIT_ATOL = 1e-5  # basis columns must have norm 1 within this
_PIVOT_RTOL = 1e-12  # Cholesky pivot^2 below this times max diag: numerically singular
REDUCTIONS = ("sum", "mean")


# ----------------------------------------------------------------------------------------------
# Checks and conversions.


def _matrix(a, name: str) -> np.ndarray:
  a = np.asarray(a)
  if a.ndim != 2 or a.size == 0:
    raise errors.DataError(
      f"{name} must be a non-empty 2-D matrix, got shape {a.shape}. "
      "Fix: pass the [d, d] covariance or the [d, m] basis itself."
    )
  if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
    raise errors.DataError(
      f"{name} has dtype {a.dtype}; a real matrix is needed. Fix: pass a float array."
    )
  a = a.astype(np.float64)
  if not np.all(np.isfinite(a)):
    raise errors.DataError(
      f"{name} contains {int(np.sum(~np.isfinite(a)))} NaN or inf entries. Fix: recompute it "
      "from finite data (check the inputs with data.check_finite, or the run for divergence)."
    )
  return a


def _symmetric(cov, name: str) -> np.ndarray:
  """Float64 copy of a square symmetric matrix, exactly symmetrized."""
  a = _matrix(cov, name)
  if a.shape[0] != a.shape[1]:
    raise errors.DataError(
      f"{name} must be square [d, d], got shape {a.shape}. Fix: pass a covariance matrix."
    )
  asym = np.max(np.abs(a - a.T))
  if asym > _SYMMETRY_RTOL * max(np.max(np.abs(a)), np.finfo(float).tiny):
    raise errors.DataError(
      f"{name} is not symmetric (max |A - A^T| = {asym:.3g}, max |A| = {np.max(np.abs(a)):.3g})."
      " Fix: pass a covariance matrix, or symmetrize it with (A + A.T) / 2."
    )
  return (a + a.T) / 2


def _basis(basis, d: int, name: str = "basis") -> np.ndarray:
  """Float64 [d, m] matrix with unit-norm columns (checked, then normalized exactly)."""
  v = _matrix(basis, name)
  if v.shape[0] != d:
    raise errors.DataError(
      f"{name} has {v.shape[0]} rows but the covariance is {d}x{d}. Fix: pass directions as "
      "COLUMNS of a [d, m] matrix (e.g. the V of eigh_desc), in the covariance's coordinates."
    )
  norms = np.linalg.norm(v, axis=0)
  if np.any(np.abs(norms - 1) > _UNIT_ATOL):
    raise errors.DataError(
      f"{name} columns must have unit norm, got norms in [{norms.min():.3g}, {norms.max():.3g}]."
      " Fix: normalize them, V / np.linalg.norm(V, axis=0)."
    )
  return v / norms


def _check_int(value, name: str, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise errors.ConfigError(
      f"{name} must be an integer >= {minimum}, got {value!r}. Fix: correct the argument."
    )
  return int(value)


def _check_reduce(reduce: str) -> str:
  if reduce not in REDUCTIONS:
    raise errors.ConfigError(
      f"reduce must be one of {REDUCTIONS}, got {reduce!r}. "
      "Fix: use 'sum' (the paper's M) or 'mean' (M / number of directions)."
    )
  return reduce


def _rng(key_or_seed) -> np.random.Generator:
  """A NumPy generator from an int seed or a JAX PRNG key (typed or raw uint32)."""
  if isinstance(key_or_seed, numbers.Integral) and not isinstance(key_or_seed, bool):
    if key_or_seed < 0:
      raise errors.ConfigError(f"seed must be >= 0, got {key_or_seed}. Fix: pass e.g. 0.")
    return np.random.default_rng(int(key_or_seed))
  data = key_or_seed
  dtype = getattr(key_or_seed, "dtype", None)
  if dtype is not None and "key" in str(dtype):
    import jax  # pylint: disable=g-import-not-at-top

    data = jax.random.key_data(key_or_seed)
  data = np.asarray(data)
  if not np.issubdtype(data.dtype, np.integer) or data.size == 0:
    raise errors.ConfigError(
      f"key_or_seed must be an int seed or a JAX PRNG key, got {type(key_or_seed).__name__}. "
      "Fix: pass e.g. 0 or jax.random.key(0)."
    )
  return np.random.default_rng(data.astype(np.uint64).ravel().tolist())


# ----------------------------------------------------------------------------------------------
# Eigenbases.


def eigh_desc(cov) -> tuple:
  """Eigenvalues in DESCENDING order [d] and eigenvectors as columns [d, d] of a symmetric matrix.

  Signs are fixed so that each eigenvector's largest-magnitude entry is positive (deterministic
  pictures and comparisons).  Raises DataError on NaN/inf or an asymmetric matrix.
  """
  a = _symmetric(cov, "cov")
  lam, v = np.linalg.eigh(a)
  lam, v = lam[::-1].copy(), v[:, ::-1].copy()
  pivot = v[np.argmax(np.abs(v), axis=0), np.arange(v.shape[1])]
  v *= np.where(pivot < 0, -1.0, 1.0)
  return lam, v


def random_basis(key_or_seed, d: int) -> np.ndarray:
  """A Haar-random orthogonal [d, d] matrix (columns = directions): QR of a Gaussian, sign-fixed."""
  d = _check_int(d, "d", 1)
  q, r = np.linalg.qr(_rng(key_or_seed).standard_normal((d, d)))
  return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def group_degenerate(eigvals, rtol: float = 1e-6, atol: float = 0.0) -> list:
  """Runs of consecutive near-equal eigenvalues, as index arrays, covering 0..d-1 in order.

  `eigvals` must be sorted descending (as from eigh_desc).  Neighbours i, i+1 share a group when
  lam_i - lam_{i+1} <= rtol * max(|lam_i|, |lam_{i+1}|) + atol; groups chain, so a slow ramp of
  small steps forms one group.
  """
  lam = np.asarray(eigvals, np.float64)
  if lam.ndim != 1 or lam.size == 0:
    raise errors.DataError(
      f"eigvals must be a non-empty 1-D array, got shape {lam.shape}. "
      "Fix: pass the eigenvalues of eigh_desc."
    )
  if not np.all(np.isfinite(lam)):
    raise errors.DataError("eigvals contain NaN or inf. Fix: recompute them from a finite matrix.")
  if rtol < 0 or atol < 0:
    raise errors.ConfigError(f"rtol and atol must be >= 0, got {rtol}, {atol}. Fix: e.g. 1e-6.")
  gaps = lam[:-1] - lam[1:]
  tol = rtol * np.maximum(np.abs(lam[:-1]), np.abs(lam[1:])) + atol
  if np.any(gaps < -tol):
    raise errors.DataError(
      "eigvals are not sorted in descending order. Fix: use eigh_desc, or sort them with "
      "order = np.argsort(-lam) and map the groups back through order."
    )
  cuts = np.flatnonzero(gaps > tol) + 1
  return np.split(np.arange(lam.size), cuts)


# ----------------------------------------------------------------------------------------------
# Misalignment and the transfer function.


def _ridged_cholesky(cov_w, ridge: float) -> tuple:
  """(S + ridge * trace(S)/d * I, its lower Cholesky factor); NumericalError if not PD."""
  s = _symmetric(cov_w, "cov_w")
  if not (np.isfinite(ridge) and ridge >= 0):
    raise errors.ConfigError(f"ridge must be a finite number >= 0, got {ridge!r}. Fix: e.g. 1e-6.")
  d = s.shape[0]
  if ridge:
    s = s + (ridge * np.trace(s) / d) * np.eye(d)
  fix = (
    "Fix: pass ridge=1e-6 (adds ridge * trace(cov_w) / d * I), or estimate cov_w from more "
    f"weight samples (pooled samples must exceed d = {d})."
  )
  try:
    low = np.linalg.cholesky(s)
  except np.linalg.LinAlgError:
    lam_min = np.linalg.eigvalsh(s)[0]
    raise errors.NumericalError(
      f"cov_w is not positive definite (smallest eigenvalue {lam_min:.3g}); it is singular or "
      f"not a covariance. {fix}"
    ) from None
  pivots = np.diag(low) ** 2
  scale = max(np.max(np.diag(s)), np.finfo(float).tiny)
  if pivots.min() <= _PIVOT_RTOL * scale:
    raise errors.NumericalError(
      f"cov_w is numerically singular (smallest Cholesky pivot {pivots.min():.3g} vs largest "
      f"variance {scale:.3g}). {fix}"
    )
  return s, low


def misalignment_terms(cov_w, basis, ridge: float = 0.0) -> np.ndarray:
  """Per-direction terms sqrt((v^T S v)(v^T S^-1 v)) - 1 >= 0 for each column v of basis [d, m].

  S = cov_w (+ ridge * trace(cov_w) / d * I).  Rounding below 0 is clipped to 0.
  """
  s, low = _ridged_cholesky(cov_w, ridge)
  v = _basis(basis, s.shape[0])
  quad = np.einsum("ij,ij->j", v, s @ v)
  inv_quad = np.sum(scipy.linalg.solve_triangular(low, v, lower=True) ** 2, axis=0)
  return np.maximum(np.sqrt(quad * inv_quad) - 1.0, 0.0)


def misalignment(cov_w, basis, reduce: str = "sum", ridge: float = 0.0) -> float:
  """The paper's M(Sigma_w; basis): sum (or mean) of `misalignment_terms` over the columns."""
  terms = misalignment_terms(cov_w, basis, ridge)
  return float(np.sum(terms) if _check_reduce(reduce) == "sum" else np.mean(terms))


def variances_in_basis(cov, basis) -> np.ndarray:
  """v_i^T cov v_i [m] for the columns v_i of basis [d, m]."""
  s = _symmetric(cov, "cov")
  v = _basis(basis, s.shape[0])
  return np.einsum("ij,ij->j", v, s @ v)


def transfer_function_in_basis(cov_w, basis) -> np.ndarray:
  """f_i = sqrt(v_i^T Sigma_w v_i) [m] for the columns v_i of basis [d, m] (negatives -> 0)."""
  return np.sqrt(np.maximum(variances_in_basis(cov_w, basis), 0.0))


def transfer_function(cov_x, cov_w) -> tuple:
  """(lam [d] descending eigenvalues of Sigma_x, f [d]) with f_i = sqrt(v_i^T Sigma_w v_i).

  lam_i = sigma_i^2: plot f against sigma = sqrt(lam) (the paper's Definition 3) or against lam.
  """
  lam, v = eigh_desc(cov_x)
  if np.shape(cov_w) != (len(lam), len(lam)):
    raise errors.DataError(
      f"cov_w has shape {np.shape(cov_w)} but cov_x is {len(lam)}x{len(lam)}. Fix: both must "
      "live in the same coordinates (patches and filters flattened in (kh, kw, C) order)."
    )
  return lam, transfer_function_in_basis(cov_w, v)


# ----------------------------------------------------------------------------------------------
# Overlaps of bases and subspaces.


def overlap_matrix(v_x, v_w) -> np.ndarray:
  """|V_x^T V_w| [m_x, m_w]: |cos| between every pair of columns (1 = same direction)."""
  a, b = _matrix(v_x, "V_x"), _matrix(v_w, "V_w")
  if a.shape[0] != b.shape[0]:
    raise errors.DataError(
      f"V_x has {a.shape[0]} rows but V_w has {b.shape[0]}. "
      "Fix: pass bases of the same space, directions as columns."
    )
  return np.abs(a.T @ b)


def _top(v, k: int, name: str) -> np.ndarray:
  a = _matrix(v, name)
  if k > a.shape[1]:
    raise errors.ConfigError(
      f"k={k} exceeds the {a.shape[1]} columns of {name}. Fix: use k <= {a.shape[1]}."
    )
  return np.linalg.qr(a[:, :k])[0]


def principal_cosines(v_a, v_b, k: int) -> np.ndarray:
  """Cosines [k] (descending) of the principal angles between span(V_a[:, :k]) and span(V_b[:, :k]).

  Compare eigenspaces only where k does not split a degenerate group (see group_degenerate):
  inside such a group the individual eigenvectors are arbitrary.
  """
  k = _check_int(k, "k", 1)
  a, b = _top(v_a, k, "V_a"), _top(v_b, k, "V_b")
  if a.shape[0] != b.shape[0]:
    raise errors.DataError(
      f"V_a has {a.shape[0]} rows but V_b has {b.shape[0]}. "
      "Fix: pass bases of the same space, directions as columns."
    )
  return np.clip(np.linalg.svd(a.T @ b, compute_uv=False), 0.0, 1.0)


def subspace_overlap(v_a, v_b, k: int) -> float:
  """Mean squared principal cosine of the top-k spans, in [0, 1]; a random k-subspace gives k/d."""
  return float(np.mean(principal_cosines(v_a, v_b, k) ** 2))


def random_subspace_baseline(d: int, k: int, key_or_seed=0, trials: int = 100) -> tuple:
  """(mean, std) of subspace_overlap between a Haar-random and a fixed k-subspace of R^d.

  The expectation is exactly k / d; the std shows how far chance alone moves one draw.
  """
  d, k, trials = _check_int(d, "d", 1), _check_int(k, "k", 1), _check_int(trials, "trials", 1)
  if k > d:
    raise errors.ConfigError(f"k={k} exceeds d={d}. Fix: use k <= d.")
  rng = _rng(key_or_seed)
  fixed = np.eye(d)[:, :k]
  vals = []
  for _ in range(trials):
    q = np.linalg.qr(rng.standard_normal((d, k)))[0]
    vals.append(subspace_overlap(q, fixed, k))
  return float(np.mean(vals)), float(np.std(vals))


def finite_sample_floor(
  basis,
  variances,
  n_samples: int,
  key_or_seed=0,
  trials: int = 500,
  reduce: str = "sum",
  ridge: float = 1e-9,
  centered: bool = False,
) -> tuple:
  """(mean, std) over trials of the misalignment, in `basis`, of a PERFECTLY aligned Sigma_w.

  Sigma_w = V diag(variances) V^T is estimated from n_samples Gaussian samples exactly as
  covariance.weight_covariance does (second moment, or ddof=1 covariance when centered), then
  scored with misalignment(., V).  Any measured misalignment at or below this floor is
  indistinguishable from perfect alignment with that many samples.  The default ridge (1e-9)
  matches eigenmap.summarize and keeps n_samples < d finite (but huge).  With at least d degrees
  of freedom the estimate is drawn directly from its Wishart law (Bartlett's decomposition: O(d^3)
  a trial, whatever n_samples), so hundreds of trials are cheap.
  """
  v = _matrix(basis, "basis")
  if v.shape[0] != v.shape[1]:
    raise errors.DataError(
      f"basis must be a full square basis [d, d], got shape {v.shape}. "
      "Fix: pass all eigenvectors (e.g. the V of eigh_desc)."
    )
  v = _basis(v, v.shape[0])
  d = v.shape[0]
  var = np.asarray(variances, np.float64)
  if var.shape != (d,) or not np.all(np.isfinite(var)) or np.any(var < 0):
    raise errors.DataError(
      f"variances must be {d} finite numbers >= 0, got shape {var.shape}. Fix: pass "
      "e.g. alignment.variances_in_basis(cov_w, V)."
    )
  n = _check_int(n_samples, "n_samples", 2 if centered else 1)
  trials = _check_int(trials, "trials", 1)
  _check_reduce(reduce)
  rng = _rng(key_or_seed)
  dof = n - 1 if centered else n
  scale = np.sqrt(var)
  vals = []
  for _ in range(trials):
    if dof >= d:  # Bartlett: V^T S V = L T T^T L / dof, L = diag(scale)
      t = np.tril(rng.standard_normal((d, d)), -1)
      t[np.diag_indices(d)] = np.sqrt(rng.chisquare(dof - np.arange(d)))
      m = scale[:, None] * t
      cov = v @ ((m @ m.T) / dof) @ v.T
    else:
      w = (rng.standard_normal((n, d)) * scale) @ v.T
      if centered:
        w = w - w.mean(axis=0)
      cov = (w.T @ w) / dof
    vals.append(misalignment(cov, v, reduce=reduce, ridge=ridge))
  return float(np.mean(vals)), float(np.std(vals))
