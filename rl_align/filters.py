"""Fig 3: eigenvectors of the first-layer filter covariance look like the data's patch PCs.

Pure analysis (it never imports a runner); the experiment is `rl_align.runners.filters`::

    from rl_align import filters
    out = filters.compare_eigenvectors(cov_x, cov_w, ks=(1, 3, 5, 10), key=0)
    out["subspace_overlap"]["5"]        # mean cos^2 of principal angles of the top-5 eigenspaces
    out["random_baseline"]["5"]         # the same for a random 5-dim subspace: (mean, std), ~ k/d

    from rl_align.runners import filters as filters_runner
    filters_runner.run(config, workdir) # trains the seeds (python -m experiments.filters)
"""
from typing import Any, Sequence

from rl_align import alignment


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
