"""The paper's proposition, checked exactly: SGD commutes with rotations of the data.

If O is orthogonal, training from first-layer weights W on inputs X gives the same network as
training from O^T W on inputs X O (same labels, same batch order), and every first-layer iterate
satisfies W'_t = O^T W_t.  When O also preserves Sigma_x (O^T Sigma_x O = Sigma_x), X O has the
law of X, so the law of W_t is O-invariant: E[w] = 0 and Sigma_w is aligned with Sigma_x.
Adam normalizes per coordinate and breaks this; ``equivariance_gap`` measures by how much::

    from rl_align import symmetry
    O = symmetry.covariance_preserving_rotation(eigvals, key=0)   # rotates inside eigenspaces
    gap = symmetry.equivariance_gap(model, cfg, x, labels, O)      # ~1e-6 for sgd/momentum

For images, O acts on the channel axis (a C x C rotation at every pixel); it maps a conv kernel
[kh, kw, C, F] to einsum('hwcf,cd->hwdf', W, O), i.e. each patch coordinate block by O^T.
"""

from typing import Any

import jax
import numpy as np

from rl_align import alignment
from rl_align import errors
from rl_align import models
from rl_align import train


def covariance_preserving_rotation(
  eigvals: np.ndarray, key: int = 0, rtol: float = 1e-9
) -> np.ndarray:
  """A random orthogonal O with O^T diag(eigvals) O = diag(eigvals): Haar inside every group of
  equal eigenvalues, identity across groups."""
  eigvals = np.asarray(eigvals, np.float64)
  d = eigvals.shape[0]
  O = np.zeros((d, d))
  order = np.argsort(-eigvals, kind="stable")
  for gi, group in enumerate(alignment.group_degenerate(eigvals[order], rtol=rtol)):
    idx = order[np.asarray(group)]
    O[np.ix_(idx, idx)] = alignment.random_basis(int(key) * 1000 + gi, len(idx))
  return O


def rotate_inputs(x: np.ndarray, O: np.ndarray) -> np.ndarray:
  """Vectors [N, d] -> x O; images [N, H, W, C] -> channel mixing x[..., c] O[c, :]."""
  if x.shape[-1] != O.shape[0]:
    raise errors.DataError(f"rotation is {O.shape} but inputs have last axis {x.shape[-1]}.")
  return (np.asarray(x, np.float64) @ O).astype(np.float32)


def rotate_first_kernel(kernel: np.ndarray, O: np.ndarray) -> np.ndarray:
  """The first-layer kernel of the rotated network: O^T W (dense [d, h] or conv [kh, kw, C, F])."""
  k = np.asarray(kernel, np.float64)
  if k.ndim == 2:
    return (O.T @ k).astype(np.float32)
  return np.einsum("hwcf,cd->hwdf", k, O).astype(np.float32)


def _with_first_kernel(params, kernel):
  name = models.first_layer_name(params)
  out = dict(params)
  out[name] = dict(params[name], kernel=kernel)
  return out


def equivariance_gap(model, cfg, x, labels, O, init_params=None) -> dict[str, Any]:
  """Trains (W, X) and (O^T W, X O) with identical labels and batch order; compares iterates.

  Returns {"max_rel_gap": max over snapshots of ||W'_t - O^T W_t|| / ||W_t||, "per_step": {...}}.
  cfg.num_seeds must be 1 (the comparison is per run); snapshots at cfg.snapshot_steps.
  """
  if int(cfg.num_seeds) != 1:
    raise errors.ConfigError("equivariance_gap compares two single runs: set num_seeds=1.")
  keep = lambda p: {"first_kernel": np.asarray(models.first_layer_kernel(p))}
  if init_params is None:
    cfg0 = cfg.copy_and_resolve_references()
    cfg0.num_steps, cfg0.snapshot_steps, cfg0.snapshot_epochs = 1, (0,), ()
    init_params = train.train(model, cfg0, x, labels, snapshot_fn=lambda p: p).snapshots[0]
  first = models.first_layer_kernel(init_params)[0]
  rotated_init = jax.tree.map(np.array, init_params)
  rotated_init = _with_first_kernel(rotated_init, rotate_first_kernel(first, O)[None])
  a = train.train(model, cfg, x, labels, init_params=init_params, snapshot_fn=keep)
  b = train.train(
    model, cfg, rotate_inputs(x, O), labels, init_params=rotated_init, snapshot_fn=keep
  )
  per_step = {}
  for step, snap in a.snapshots.items():
    wa = snap["first_kernel"][0]
    wb = b.snapshots[step]["first_kernel"][0]
    per_step[step] = float(np.linalg.norm(wb - rotate_first_kernel(wa, O)) / np.linalg.norm(wa))
  return {"max_rel_gap": max(per_step.values()), "per_step": per_step}
