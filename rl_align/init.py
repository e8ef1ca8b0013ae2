"""Covariance-aligned initializers, layer-by-layer sampling (paper section 2.5), weight-scaling control.

Every initializer has Flax's signature ``(key, shape, dtype) -> array`` and works for dense kernels
[d, h] and conv kernels [kh, kw, C_in, C_out]: the fan-in axes are flattened in (kh, kw, C_in) order,
the order of ``covariance.extract_patches`` / ``covariance.weight_covariance``, and the C_out (or h)
columns are i.i.d. N(0, Sigma)::

    import flax.linen as nn
    from rl_align import covariance, init

    # (a) from a weight covariance, e.g. of random-label-pretrained first-layer filters pooled over seeds
    cov_w = covariance.weight_covariance(kernels)                 # [S, 3, 3, 3, F] -> [27, 27]
    conv = nn.Conv(64, (3, 3), padding="VALID", kernel_init=init.covariance_init(cov_w))

    # (b) from a data covariance and a transfer function f: Sigma = V diag(f(lambda))^2 V^T
    f = init.TransferFunction(lam_pretrained, f_pretrained)     # piecewise linear in log lambda
    _, cov_x = covariance.patch_covariance(new_images, k=3)
    conv = nn.Conv(64, (3, 3), padding="VALID", kernel_init=init.transfer_init(cov_x, f))

    # our models take it as `first_kernel_init`; any Flax layer takes it as `kernel_init`.

    # Section 2.5: layers 2..L from f_l measured on the pretrained net, V from the NEW net's inputs
    fs = {l: init.measure_layer_transfer(model, pretrained_seeds, x, l) for l in layers[1:L]}
    params = init.sample_layerwise(model, params, x_new, fs, key)

    # The weight-scaling control: each tensor back to its init L2 norm, then a fresh head
    params = init.weight_scaling_control(trained, at_init, fresh)
    per_seed = init.unstack(stacked)          # [S, ...] params <-> one tree per seed: init.stack

Sigma may be given dense (eigen-decomposed once, in float64) or as a :class:`Spectrum` (orthonormal
directions, a std along each, and one std for the orthogonal complement), the low-rank form used
for layers with a large fan-in, where a d x d matrix would not fit (a 12544-wide dense layer).
"""

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rl_align import covariance as covariance_lib
from rl_align import errors

# Eigenvalues of a covariance in [-PSD_RTOL * lambda_max, 0) are round-off and clipped to 0;
# anything more negative means the matrix is not a covariance.
PSD_RTOL = 1e-6
SYM_RTOL = 1e-6
# Fan-ins up to this size get a full eigendecomposition; larger ones the low-rank (Gram) route.
FULL_EIGH_MAX_DIM = 4096

Initializer = Callable[..., jax.Array]


# ----------------------------------------------------------------------------------------------
# Spectra.


@dataclasses.dataclass(frozen=True)
class Spectrum:
  """Sigma = V diag(stds)^2 V^T + rest_std^2 (I - V V^T).

  vectors: [d, k] orthonormal columns (k <= d); stds: [k] >= 0; rest_std: std in every direction
  orthogonal to the columns (irrelevant when k == d).
  """

  vectors: np.ndarray
  stds: np.ndarray
  rest_std: float = 0.0

  @property
  def dim(self) -> int:
    return int(self.vectors.shape[0])

  def covariance(self) -> np.ndarray:
    """The dense d x d matrix (float64); only for small d (tests, plots)."""
    v, s = np.asarray(self.vectors, np.float64), np.asarray(self.stds, np.float64)
    cov = (v * s**2) @ v.T
    if v.shape[1] < v.shape[0]:
      cov += self.rest_std**2 * (np.eye(v.shape[0]) - v @ v.T)
    return cov

  def sample(self, key, n: int, dtype=jnp.float32) -> jax.Array:
    """n i.i.d. columns from N(0, Sigma): [d, n]."""
    v = jnp.asarray(self.vectors, jnp.float32)
    s = jnp.asarray(self.stds, jnp.float32)
    d, k = v.shape
    if k == d:
      z = jax.random.normal(key, (k, n), jnp.float32)
      return (v @ (s[:, None] * z)).astype(dtype)
    z = jax.random.normal(key, (d, n), jnp.float32)
    coef = v.T @ z  # [k, n]
    out = v @ (s[:, None] * coef) + self.rest_std * (z - v @ coef)
    return out.astype(dtype)


def _check_matrix(cov, name: str) -> np.ndarray:
  c = np.asarray(cov)
  if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0:
    raise errors.DataError(
      f"{name} must be a square [d, d] matrix, got shape {c.shape}. Fix: pass "
      "a covariance, e.g. covariance.weight_covariance(kernels)."
    )
  if not np.issubdtype(c.dtype, np.floating):
    c = c.astype(np.float64)
  c = c.astype(np.float64)
  if not np.all(np.isfinite(c)):
    raise errors.DataError(
      f"{name} contains {int(np.sum(~np.isfinite(c)))} NaN/inf entries. Fix: "
      "estimate it from finite weights/data (a diverged seed gives NaN weights; "
      "drop it)."
    )
  scale = max(np.abs(c).max(), 1e-300)
  if np.abs(c - c.T).max() > SYM_RTOL * scale:
    raise errors.NumericalError(
      f"{name} is not symmetric (max |S - S^T| = "
      f"{np.abs(c - c.T).max():.3g}, max |S| = {scale:.3g}). Fix: pass a "
      "covariance, or symmetrize it with (S + S.T) / 2."
    )
  return (c + c.T) / 2


def eigh_psd(cov, name: str = "Sigma") -> tuple[np.ndarray, np.ndarray]:
  """(eigenvalues descending >= 0, eigenvectors as columns) of a covariance, in float64.

  Tiny negative eigenvalues (round-off, >= -PSD_RTOL * lambda_max) are clipped to 0; clearly
  negative ones raise NumericalError; NaN/inf or a non-square / asymmetric matrix raise too.
  """
  c = _check_matrix(cov, name)
  lam, v = np.linalg.eigh(c)
  lam, v = lam[::-1], v[:, ::-1]
  tol = PSD_RTOL * max(abs(lam[0]), abs(lam[-1]), 1e-300)
  if lam[-1] < -tol:
    raise errors.NumericalError(
      f"{name} is not positive semi-definite: its smallest eigenvalue is {lam[-1]:.3g} (largest "
      f"{lam[0]:.3g}). Fix: pass a covariance / second-moment matrix (e.g. W^T W / n), not a "
      "difference of such matrices."
    )
  return np.clip(lam, 0.0, None), v


def spectrum_of(cov, name: str = "Sigma") -> Spectrum:
  """The Spectrum (full rank form) of a dense PSD matrix."""
  lam, v = eigh_psd(cov, name)
  return Spectrum(v, np.sqrt(lam), 0.0)


# ----------------------------------------------------------------------------------------------
# The transfer function f.


class TransferFunction:
  """f(lambda): piecewise linear in log(lambda) through the knots (lambda_i, f_i).

  Outside [min lambda_i, max lambda_i] f is constant (the end knot's value); lambda <= 0 gets the
  smallest knot's value.  Knots with equal lambda are merged (root mean square of their f).  f is
  NOT forced to be monotone: the paper's f rises and falls.  Since log sigma = log(lambda) / 2 the
  same curve is piecewise linear in log sigma.  `rest` is f in the null space of a low-rank input
  covariance (see `measure_transfer`); None means "use f at the smallest knot".
  """

  def __init__(self, eigenvalues, f, rest: float | None = None):
    lam = np.asarray(eigenvalues, np.float64).reshape(-1)
    fv = np.asarray(f, np.float64).reshape(-1)
    if lam.shape != fv.shape:
      raise errors.DataError(
        f"TransferFunction: {lam.size} eigenvalues but {fv.size} values of f. "
        "Fix: pass one f value per eigenvalue."
      )
    if not (np.all(np.isfinite(lam)) and np.all(np.isfinite(fv))):
      raise errors.DataError(
        "TransferFunction: eigenvalues or f contain NaN/inf. Fix: measure f on "
        "finite (non-diverged) weights."
      )
    if np.any(fv < 0):
      raise errors.DataError(
        "TransferFunction: f must be >= 0 (it is a standard deviation). Fix: "
        "pass f = sqrt(v_i^T Sigma_w v_i)."
      )
    keep = lam > 0
    if not keep.any():
      raise errors.DataError(
        "TransferFunction: no eigenvalue is > 0, so log(lambda) is undefined. "
        "Fix: pass the eigenvalues of a non-zero covariance."
      )
    log_lam, f2 = np.log(lam[keep]), fv[keep] ** 2
    uniq, inv = np.unique(log_lam, return_inverse=True)
    self.log_knots = uniq
    self.values = np.sqrt(np.bincount(inv, f2) / np.bincount(inv))
    self.rest = None if rest is None else float(rest)

  @property
  def knots(self) -> np.ndarray:
    return np.exp(self.log_knots)

  def __call__(self, eigenvalues) -> np.ndarray:
    lam = np.asarray(eigenvalues, np.float64)
    safe = np.log(np.where(lam > 0, lam, np.exp(self.log_knots[0])))
    return np.interp(safe, self.log_knots, self.values)

  def __repr__(self):
    return (
      f"TransferFunction({self.values.size} knots, lambda in [{self.knots[0]:.3g}, "
      f"{self.knots[-1]:.3g}], f in [{self.values.min():.3g}, {self.values.max():.3g}])"
    )


def measure_transfer(
  weights, vectors, *, with_rest: bool | None = None
) -> tuple[np.ndarray, float]:
  """f_i = sqrt(v_i^T Sigma_w v_i) with Sigma_w = E[w w^T] of the weight samples (uncentered).

  Args:
    weights: [n, d] samples (rows), or kernels accepted by `covariance.weight_samples`.
    vectors: [d, k] orthonormal eigenvectors of the inputs' covariance.
    with_rest: also return f in the complement of the vectors (default: when k < d).
  Returns (f [k], f_rest): f_rest^2 = mean over the d - k complement directions of w^T P w.
  """
  w = np.asarray(weights, np.float64)
  if w.ndim != 2:
    w = covariance_lib.weight_samples(w)
  v = np.asarray(vectors, np.float64)
  if w.shape[1] != v.shape[0]:
    raise errors.DataError(
      f"measure_transfer: weights have fan-in {w.shape[1]} but the eigenvectors "
      f"are {v.shape[0]}-dimensional. Fix: use the covariance of this layer's "
      "inputs."
    )
  proj2 = np.mean((w @ v) ** 2, axis=0)
  d, k = v.shape
  rest = 0.0
  if (with_rest if with_rest is not None else k < d) and k < d:
    total = np.mean(np.sum(w**2, axis=1))
    rest = math.sqrt(max(total - proj2.sum(), 0.0) / (d - k))
  return np.sqrt(proj2), rest


def pooled_transfer(
  eigenvalues: Sequence[np.ndarray],
  fs: Sequence[np.ndarray],
  rests: Sequence[float] = (),
  num_bins: int | None = None,
) -> TransferFunction:
  """One TransferFunction from several (lambda, f) measurements (e.g. one per pretrained seed).

  num_bins=None keeps every knot (equal eigenvalues, e.g. a shared data eigenbasis, are merged);
  otherwise the pooled points are sorted by lambda and cut into `num_bins` equal-count bins, each a
  knot at its mean log lambda with the root mean square of its f.
  """
  lam = np.concatenate([np.asarray(l, np.float64).reshape(-1) for l in eigenvalues])
  f = np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in fs])
  rest = float(np.sqrt(np.mean(np.square(rests)))) if len(rests) else None
  pos = lam > 0
  if num_bins is None or pos.sum() <= num_bins:
    return TransferFunction(lam, f, rest)
  order = np.argsort(lam[pos])
  ll, ff = np.log(lam[pos][order]), f[pos][order]
  parts = np.array_split(np.arange(ll.size), int(num_bins))
  knots = np.array([np.exp(ll[p].mean()) for p in parts])
  vals = np.array([np.sqrt(np.mean(ff[p] ** 2)) for p in parts])
  return TransferFunction(knots, vals, rest)


def aligned_spectrum(
  eigenvalues, vectors, f: TransferFunction | Callable, rest_eigenvalue: float = 0.0
) -> Spectrum:
  """Spectrum of V diag(f(lambda))^2 V^T (+ f(rest)^2 on the complement of a low-rank V)."""
  lam = np.asarray(eigenvalues, np.float64)
  stds = np.asarray(f(lam), np.float64)
  rest = getattr(f, "rest", None)
  if rest is None:
    rest = float(np.asarray(f(np.array([rest_eigenvalue]))).reshape(-1)[0])
  if not np.all(np.isfinite(stds)) or np.any(stds < 0):
    raise errors.NumericalError(
      "f returned NaN/inf or negative values on the eigenvalues. Fix: "
      "use a TransferFunction built from finite, non-negative f."
    )
  return Spectrum(np.asarray(vectors, np.float64), stds, float(rest))


# ----------------------------------------------------------------------------------------------
# Initializers.


def _fan_in(shape) -> int:
  if len(shape) < 2:
    raise errors.ConfigError(
      f"a covariance initializer needs a kernel [fan_in..., fan_out], got "
      f"shape {tuple(shape)}. Fix: use it as kernel_init of a Dense/Conv "
      "layer, not for biases."
    )
  return int(np.prod(shape[:-1]))


def spectrum_init(spec: Spectrum, scale: float = 1.0) -> Initializer:
  """Flax initializer: the kernel's columns i.i.d. N(0, scale^2 Sigma) with Sigma from `spec`."""

  def init(key, shape, dtype=jnp.float32):
    d = _fan_in(shape)
    if d != spec.dim:
      kind = "kh*kw*C_in" if len(shape) == 4 else "fan-in"
      raise errors.ConfigError(
        f"the kernel {tuple(shape)} has {kind} = {d}, but Sigma is {spec.dim} x {spec.dim}. Fix: "
        f"estimate Sigma for this layer (conv {tuple(shape[:-1])} patches flattened in "
        "(kh, kw, C) order), or change the layer to match it."
      )
    w = spec.sample(key, int(shape[-1]), jnp.float32) * scale
    return w.reshape(shape).astype(dtype)

  return init


def covariance_init(cov, scale: float = 1.0) -> Initializer:
  """Flax initializer drawing each output column i.i.d. from N(0, scale^2 cov).

  cov: [d, d] PSD (e.g. pooled `covariance.weight_covariance` of pretrained filters), d = fan-in
  flattened in (kh, kw, C_in) order; or a `Spectrum`.  Checked once, here (NaN, asymmetry, clearly
  negative eigenvalues raise; round-off negatives are clipped).
  """
  spec = cov if isinstance(cov, Spectrum) else spectrum_of(cov, "the weight covariance")
  return spectrum_init(spec, scale)


def transfer_init(data_cov, f, scale: float = 1.0) -> Initializer:
  """Flax initializer with Sigma = V diag(f(lambda))^2 V^T, (lambda, V) the eigenpairs of data_cov.

  data_cov: [d, d] covariance of the layer's inputs (patches for a conv), or a tuple
  (eigenvalues [k], eigenvectors [d, k]) possibly low-rank; f: a TransferFunction (or any
  vectorized callable lambda -> f(lambda)).
  """
  if isinstance(data_cov, tuple):
    lam, v = data_cov
  else:
    lam, v = eigh_psd(data_cov, "the data covariance")
  return spectrum_init(aligned_spectrum(lam, v, f), scale)


def whitening_filters(data_cov, num_filters: int, eps: float = 5e-4) -> np.ndarray:
  """PCA-whitening filters [d, num_filters] (the airbench trick): +-v_i / sqrt(lambda_i + eps).

  Columns 2i and 2i+1 are +-v_i / sqrt(lambda_i + eps) for the top num_filters // 2 eigenpairs
  (so a ReLU passes both signs); with num_filters > 2d the remaining columns are zero (fill them from
  another initializer).  Each filter's response to data with covariance data_cov has variance
  lambda_i / (lambda_i + eps) ~ 1.
  """
  lam, v = eigh_psd(data_cov, "the data covariance")
  d = v.shape[0]
  k = min(num_filters // 2, d)
  w = v[:, :k] / np.sqrt(lam[:k] + eps)
  out = np.zeros((d, num_filters))
  out[:, 0 : 2 * k : 2], out[:, 1 : 2 * k : 2] = w, -w
  return out


# ----------------------------------------------------------------------------------------------
# Layers of any Flax model: call order, kernels, inputs.


def _path_key(path) -> str:
  return "/".join(path)


def _get(params, path):
  for p in path:
    params = params[p]
  return params


def _set(params, path, name, value):
  out = flax.core.unfreeze(params)
  node = out
  for p in path:
    node[p] = dict(node[p])
    node = node[p]
  node[name] = value
  return out


def kernel_layers(model: nn.Module, params, x) -> list[str]:
  """Paths ("Conv_0", "block1/conv", ...) of the submodules that own a `kernel`, in CALL order.

  Flax orders params by module construction, which may differ from the order of calls; this runs
  the model once on x[:1] with a method interceptor.
  """
  order = []

  def icpt(next_fun, args, kwargs, ctx):
    path = tuple(ctx.module.path)
    if ctx.method_name == "__call__" and path and path not in order:
      order.append(path)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(icpt):
    model.apply({"params": params}, jnp.asarray(x[:1]))
  out = []
  for path in order:
    try:
      node = _get(params, path)
    except (KeyError, TypeError):
      continue
    if isinstance(node, Mapping) and "kernel" in node:
      out.append(_path_key(path))
  return out


def layer_inputs(model: nn.Module, params, x, layer: str) -> jax.Array:
  """The input the submodule at path `layer` ("a/b") receives when the model runs on x."""
  target = tuple(layer.split("/"))
  box = []

  def icpt(next_fun, args, kwargs, ctx):
    if ctx.method_name == "__call__" and tuple(ctx.module.path) == target and not box:
      box.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(icpt):
    model.apply({"params": params}, x)
  if not box:
    raise errors.ConfigError(
      f"layer {layer!r} is never called by the model. Fix: pick one of "
      f"init.kernel_layers(model, params, x)."
    )
  return box[0]


def input_samples(inputs, kernel_shape) -> np.ndarray:
  """Rows [n, fan_in] a kernel sees: conv patches (VALID, stride 1, (kh, kw, C) order) or vectors.

  SAME padding and strides are ignored: their patches are a subset / border variant of these.
  """
  a = np.asarray(inputs, np.float32)
  if len(kernel_shape) == 4:
    kh, kw = kernel_shape[:2]
    if kh != kw:
      raise errors.ConfigError(
        f"non-square conv kernels {tuple(kernel_shape)} are not supported "
        "by layer-wise sampling. Fix: use square kernels."
      )
    p = np.asarray(covariance_lib.extract_patches(a, int(kh)))
    return p.reshape(-1, p.shape[-1])
  return a.reshape(-1, kernel_shape[0])


def input_spectrum(
  samples, max_full_dim: int = FULL_EIGH_MAX_DIM, rtol: float = 1e-9
) -> tuple[np.ndarray, np.ndarray]:
  """(lambda desc [k], V [d, k]) of the centered covariance of the rows of samples [n, d].

  d <= max_full_dim: full float64 eigendecomposition (k = d).  Larger d: the eigenpairs of the
  (n x n) Gram matrix of the centered samples (k <= n - 1, eigenvalues below rtol * lambda_max
  dropped); the complement of V then has zero sample variance.
  """
  x = np.asarray(samples)
  if x.ndim != 2 or len(x) < 2:
    raise errors.DataError(
      f"input_spectrum needs >= 2 samples [n, d], got shape {x.shape}. Fix: pass more inputs."
    )
  d = x.shape[1]
  if d <= max_full_dim:
    _, cov = covariance_lib.data_covariance(x)
    return eigh_psd(cov, "the layer-input covariance")
  xc = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
  if not np.all(np.isfinite(xc)):
    raise errors.DataError(
      "the layer inputs contain NaN/inf. Fix: check the lower layers' weights."
    )
  gram = xc @ xc.T / (len(x) - 1)
  lam, u = np.linalg.eigh(gram)
  lam, u = lam[::-1], u[:, ::-1]
  keep = lam > rtol * max(lam[0], 1e-300)
  lam, u = lam[keep], u[:, keep]
  v = xc.T @ u / np.sqrt(lam * (len(x) - 1))
  return lam, v


def measure_layer_transfer(
  model: nn.Module,
  params_per_seed: Sequence[Any],
  x,
  layer: str,
  *,
  num_bins: int | None = 24,
  max_full_dim: int = FULL_EIGH_MAX_DIM,
) -> TransferFunction:
  """f_l of a pretrained network: its layer-l weights against ITS OWN layer-l input covariance.

  params_per_seed: one params tree per pretrained seed (unstacked); x: the inputs the covariance
  is taken over (e.g. the upstream images).  f is measured per seed in that seed's input eigenbasis
  and pooled over seeds (`pooled_transfer`).
  """
  lams, fs, rests = [], [], []
  for p in params_per_seed:
    kernel = np.asarray(_get(p, layer.split("/"))["kernel"])
    xs = input_samples(layer_inputs(model, p, x, layer), kernel.shape)
    lam, v = input_spectrum(xs, max_full_dim)
    f, rest = measure_transfer(kernel.reshape(-1, kernel.shape[-1]).T, v)
    lams.append(lam), fs.append(f), rests.append(rest)
  return pooled_transfer(lams, fs, rests if any(r > 0 for r in rests) else (), num_bins)


def sample_layer(
  model: nn.Module,
  params,
  x,
  layer: str,
  f: TransferFunction,
  key,
  *,
  max_full_dim: int = FULL_EIGH_MAX_DIM,
):
  """params with layer's kernel re-drawn from V diag(f(lambda))^2 V^T, (lambda, V) of its inputs
  in THIS network (params' lower layers) on x.  Returns (params, spectrum)."""
  path = layer.split("/")
  kernel = np.asarray(_get(params, path)["kernel"])
  xs = input_samples(layer_inputs(model, params, x, layer), kernel.shape)
  lam, v = input_spectrum(xs, max_full_dim)
  spec = aligned_spectrum(lam, v, f)
  new = spectrum_init(spec)(key, kernel.shape, kernel.dtype)
  return _set(params, path, "kernel", np.asarray(new)), spec


def sample_layerwise(
  model: nn.Module,
  params,
  x,
  transfer: Mapping[str, TransferFunction],
  key,
  *,
  max_full_dim: int = FULL_EIGH_MAX_DIM,
):
  """Section 2.5: re-draws each layer in `transfer` (in call order), bottom-up, from the NEW
  network's input covariance at that layer (lower layers already re-drawn) and f_l.

  params: one seed's params (layers not in `transfer` are kept, e.g. a first layer drawn with
  covariance_init); transfer: {layer path: f_l} (`measure_layer_transfer` on the pretrained net).
  """
  order = kernel_layers(model, params, x)
  unknown = [l for l in transfer if l not in order]
  if unknown:
    raise errors.ConfigError(
      f"layers {unknown} have no kernel in this model; its layers are "
      f"{order}. Fix: name layers from that list."
    )
  for i, layer in enumerate(l for l in order if l in transfer):
    params, _ = sample_layer(
      model,
      params,
      x,
      layer,
      transfer[layer],
      jax.random.fold_in(key, i),
      max_full_dim=max_full_dim,
    )
  return params


# ----------------------------------------------------------------------------------------------
# The weight-scaling control.


def rescale_to_init(params, init_params):
  """Each tensor multiplied by ||init|| / ||params|| (L2 over the whole tensor), one seed.

  A tensor that is zero now stays zero; one that was zero at init (biases) becomes zero.
  """

  def one(p, p0):
    p64, p064 = np.asarray(p, np.float64), np.asarray(p0, np.float64)
    n, n0 = np.linalg.norm(p64), np.linalg.norm(p064)
    scale = n0 / n if n > 0 else 1.0
    return (p64 * scale).astype(np.asarray(p).dtype)

  return jax.tree.map(one, params, init_params)


def unstack(stacked) -> list:
  """Params with a leading seed axis -> one tree of numpy arrays per seed."""
  leaves = jax.tree.leaves(stacked)
  n = leaves[0].shape[0] if leaves else 0
  return [jax.tree.map(lambda a, i=i: np.asarray(a[i]), stacked) for i in range(n)]


def stack(trees: Sequence[Any]):
  """One tree per seed -> params with a leading seed axis (numpy)."""
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def replace_layer(params, source, layer: str):
  """params with the subtree at path `layer` taken from `source` (e.g. a fresh head)."""
  path = layer.split("/")
  out = flax.core.unfreeze(params)
  node = out
  for p in path[:-1]:
    node[p] = dict(node[p])
    node = node[p]
  node[path[-1]] = jax.tree.map(np.asarray, _get(source, path))
  return out


def weight_scaling_control(params, init_params, fresh_params, head: str):
  """The paper's control: every tensor rescaled to its L2 norm at init, then the head (path, e.g.
  `kernel_layers(model, params, x)[-1]`; Flax's params order is NOT always call order) replaced by
  fresh_params' head."""
  return replace_layer(rescale_to_init(params, init_params), fresh_params, head)
