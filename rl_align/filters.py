"""Fig 3: eigenvectors of the first-layer filter covariance look like the data's patch PCs.

    from rl_align import filters
    out = filters.compare_eigenvectors(cov_x, cov_w, ks=(1, 3, 5, 10), key=0)
    out["subspace_overlap"]["5"]        # mean cos^2 of principal angles of the top-5 eigenspaces
    out["random_baseline"]["5"]         # the same for a random 5-dim subspace: (mean, std), ~ k/d

    filters.run(config, workdir)        # trains the seeds (python -m experiments.filters)
"""
import os
import time
from typing import Any, Sequence

import numpy as np

from rl_align import alignment
from rl_align import covariance
from rl_align import eigenmap
from rl_align import models
from rl_align import results
from rl_align import train


def compare_eigenvectors(cov_x, cov_w, ks: Sequence[int] = (1, 3, 5, 10), key=0) -> dict[str, Any]:
  """Overlap of the top-k eigenspaces of cov_x and cov_w, against a random-subspace baseline."""
  lam_x, v_x = alignment.eigh_desc(cov_x)
  lam_w, v_w = alignment.eigh_desc(cov_w)
  d = v_x.shape[0]
  ks = [k for k in ks if k < d]
  return {
      "eigenvalues_x": lam_x, "eigenvalues_w": lam_w, "eigenvectors_x": v_x, "eigenvectors_w": v_w,
      "subspace_overlap": {str(k): alignment.subspace_overlap(v_x, v_w, k) for k in ks},
      "random_baseline": {str(k): alignment.random_subspace_baseline(d, k, key, trials=200)
                          for k in ks},
      "principal_cosines_top10": alignment.principal_cosines(v_x, v_w, min(10, d - 1)),
      "overlap_matrix_top10": alignment.overlap_matrix(v_x, v_w)[:10, :10],
      **best_matches(v_x, v_w, n=min(10, d), key=key),
  }


def best_matches(v_x, v_w, n: int = 10, key=0) -> dict[str, Any]:
  """For each of the top-n filter eigenvectors: the data PC it is closest to, among all of them.

  Returns `best_match_pc` (1-based data PC index), `best_match_cos` (|cos| with it) and
  `best_match_cos_random` (the mean best |cos| of n Haar-random unit vectors: the chance level,
  ~ sqrt(2 log d / d)).  The filter eigenvalue order may differ from the data's (f is not monotone),
  so this is order-free where the top-k subspace overlap is not.
  """
  over = alignment.overlap_matrix(v_x, v_w)[:, :n]
  rand = alignment.overlap_matrix(v_x, alignment.random_basis(key, v_x.shape[0])[:, :n])
  return {"best_match_pc": (over.argmax(0) + 1).tolist(), "best_match_cos": over.max(0),
          "best_match_cos_random": float(rand.max(0).mean())}


def plot_eigenvectors(v_x, v_w, shape, path: str, n: int = 10, matches=None) -> str:
  """Top-n eigenvectors of the patch covariance (top row) and filter covariance (bottom row);
  `matches` (best_matches output) labels each filter eigenvector with its closest data PC."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n = min(n, v_x.shape[1])
  fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 3))
  for row, (v, label) in enumerate(((v_x, "data patches"), (v_w, "filters"))):
    for i in range(n):
      img = v[:, i].reshape(shape)
      img = (img - img.min()) / max(img.max() - img.min(), 1e-12)
      ax = axes[row, i]
      ax.imshow(img if shape[-1] == 3 else img[..., 0], cmap=None if shape[-1] == 3 else "gray")
      ax.set_xticks([]), ax.set_yticks([])
      if i == 0:
        ax.set_ylabel(label, fontsize=8)
      if row == 0:
        ax.set_title(f"#{i + 1}", fontsize=8)
      elif matches is not None:
        ax.set_xlabel(f"≈ PC #{matches['best_match_pc'][i]} "
                      f"(|cos| {matches['best_match_cos'][i]:.2f})", fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def run(config, workdir: str) -> dict[str, Any]:
  """Trains config.train.num_seeds seeds, pools first-layer filters, compares eigenvectors."""
  t0 = time.time()
  ds, x, labels = eigenmap.load_data(config)
  k = int(config.analysis.patch_size)
  _, cov_x = covariance.patch_covariance(x, k)
  res = train.train(models.build(config.model), config.train, x, labels, workdir=workdir)
  kernels = models.first_layer_kernel(res.params)
  if kernels.shape[1:3] != (k, k):
    raise eigenmap.experiment.errors.ConfigError(
        f"the first layer is {kernels.shape[1]}x{kernels.shape[2]} but analysis.patch_size={k}. "
        "Fix: make them equal (e.g. --config.analysis.patch_size=5).")
  cov_w = covariance.weight_covariance(kernels, centered=config.analysis.centered)
  cmp = compare_eigenvectors(cov_x, cov_w, key=int(config.analysis.basis_seed))
  shape = (k, k, x.shape[-1])
  out = {key: cmp[key] for key in ("subspace_overlap", "random_baseline",
                                   "principal_cosines_top10", "overlap_matrix_top10",
                                   "best_match_pc", "best_match_cos", "best_match_cos_random",
                                   "eigenvalues_x", "eigenvalues_w")}
  out.update(train_accuracy=res.final_metrics.get("train_accuracy"), diverged=res.diverged,
             num_filters_pooled=int(np.prod(kernels.shape[:1]) * kernels.shape[-1]),
             num_train_examples=len(ds), runtime_s=time.time() - t0)
  results.write_json(workdir, "results.json", out)
  results.write_npz(workdir, "arrays.npz", {"eigenvectors_x": cmp["eigenvectors_x"],
                                            "eigenvectors_w": cmp["eigenvectors_w"],
                                            "cov_x": cov_x, "cov_w": cov_w})
  plot_eigenvectors(cmp["eigenvectors_x"], cmp["eigenvectors_w"], shape,
                    os.path.join(workdir, "fig3_eigenvectors.png"), matches=cmp)
  return out
