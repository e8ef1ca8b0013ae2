"""Fig 3: eigenvectors of the first-layer filter covariance look like the data's patch PCs.

Pure analysis (it never imports a runner); the experiment is `rl_align.runners.filters`::

    from rl_align import filters
    out = filters.compare_eigenvectors(cov_x, cov_w, ks=(1, 3, 5, 10), key=0)
    out["subspace_overlap"]["5"]        # mean cos^2 of principal angles of the top-5 eigenspaces
    out["random_baseline"]["5"]         # the same for a random 5-dim subspace: (mean, std), ~ k/d

    t = filters.alignment_tests(cov_x, cov_w, n_samples=512, key=0)   # order-free (Fig 3's claim)
    t["misalignment_eigenbasis"], t["misalignment_random_bases"]["q025"], t["group_energy"]

    from rl_align.runners import filters as filters_runner
    filters_runner.run(config, workdir) # trains the seeds (python -m experiments.filters)
"""

from typing import Any, Sequence

import numpy as np

from rl_align import alignment


def compare_eigenvectors(cov_x, cov_w, ks: Sequence[int] = (1, 3, 5, 10), key=0) -> dict[str, Any]:
  """Overlap of the top-k eigenspaces of cov_x and cov_w, against a random-subspace baseline."""
  lam_x, v_x = alignment.eigh_desc(cov_x)
  lam_w, v_w = alignment.eigh_desc(cov_w)
  d = v_x.shape[0]
  ks = [k for k in ks if k < d]
  return {
    "eigenvalues_x": lam_x,
    "eigenvalues_w": lam_w,
    "eigenvectors_x": v_x,
    "eigenvectors_w": v_w,
    "subspace_overlap": {str(k): alignment.subspace_overlap(v_x, v_w, k) for k in ks},
    "random_baseline": {
      str(k): alignment.random_subspace_baseline(d, k, key, trials=200) for k in ks
    },
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
  return {
    "best_match_pc": (over.argmax(0) + 1).tolist(),
    "best_match_cos": over.max(0),
    "best_match_cos_random": float(rand.max(0).mean()),
  }


def group_energy(v_x, groups, u) -> np.ndarray:
  """For each column of u: the largest squared norm of its projection onto the span of one group
  of data PCs (`alignment.group_degenerate` of the data eigenvalues): 1 when it lies inside one
  eigenspace, ~|G|/d for a random direction."""
  v_x, u = np.asarray(v_x, np.float64), np.asarray(u, np.float64)
  return np.max(np.stack([np.sum((v_x[:, g].T @ u) ** 2, axis=0) for g in groups]), axis=0)


def alignment_tests(
  cov_x,
  cov_w,
  n_samples: int,
  key=0,
  *,
  k: int = 10,
  rtol: float = 0.1,
  random_bases: int = 200,
  floor_trials: int = 500,
  chance_trials: int = 2000,
) -> dict[str, Any]:
  """Order-free tests of Fig 3's claim that Sigma_w's eigenvectors are the data's patch PCs (up to
  mixing inside near-degenerate eigenspaces), with their chance levels.

  - misalignment of cov_w in the data eigenbasis, against `random_bases` Haar-random bases
    (mean, std, 2.5% quantile) and the finite-sample floor of a perfectly aligned Sigma_w estimated
    from n_samples filters (mean, std over `floor_trials`);
  - group_energy: the mean over the top-k eigenvectors of cov_w of their largest projection energy
    onto one group of near-degenerate data PCs (eigenvalues within `rtol`, chained), against the
    same statistic for k Haar-random orthonormal directions (mean, std, 95% quantile).
  """
  lam_x, v_x = alignment.eigh_desc(cov_x)
  _, v_w = alignment.eigh_desc(cov_w)
  d = v_x.shape[0]
  k = min(int(k), d - 1)
  rng = np.random.default_rng([3, int(key)])  # its own stream, fixed by key
  mis = lambda basis: alignment.misalignment(cov_w, basis, ridge=1e-9)
  rand = np.array(
    [mis(np.linalg.qr(rng.standard_normal((d, d)))[0]) for _ in range(int(random_bases))]
  )
  floor = alignment.finite_sample_floor(
    v_x,
    alignment.variances_in_basis(cov_w, v_x),
    int(n_samples),
    int(key),
    trials=int(floor_trials),
  )
  groups = alignment.group_degenerate(lam_x, rtol=rtol)
  chance = np.array(
    [
      group_energy(v_x, groups, np.linalg.qr(rng.standard_normal((d, k)))[0]).mean()
      for _ in range(int(chance_trials))
    ]
  )
  return {
    "misalignment_eigenbasis": mis(v_x),
    "misalignment_random_bases": {
      "mean": float(rand.mean()),
      "std": float(rand.std()),
      "q025": float(np.quantile(rand, 0.025)),
      "trials": int(random_bases),
    },
    "misalignment_floor": {"mean": floor[0], "std": floor[1], "trials": int(floor_trials)},
    "group_energy": float(group_energy(v_x, groups, v_w[:, :k]).mean()),
    "group_energy_per_vector": group_energy(v_x, groups, v_w[:, :k]),
    "group_energy_chance": {
      "mean": float(chance.mean()),
      "std": float(chance.std()),
      "q95": float(np.quantile(chance, 0.95)),
      "trials": int(chance_trials),
    },
    "groups": [[int(i) + 1 for i in g] for g in groups],
    "k": k,
    "degenerate_rtol": rtol,
  }
