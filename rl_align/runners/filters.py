"""Fig 3's experiment: train the seeds, pool the first-layer filters of the seeds that finished,
compare the eigenvectors of their covariance with the data's patch PCs, write, plot.

    from rl_align.runners import filters
    out = filters.run(config, workdir)     # experiments/configs/fig3.py
    out["subspace_overlap"]["10"], out["random_baseline"]["10"]

The analysis is `rl_align.filters` (`compare_eigenvectors`, rank order, descriptive;
`alignment_tests`, order-free, Fig 3's claim).  Sigma_w pools the filters of the seeds that fitted
their random labels (`rl_align.claims.filters.pooled_seeds`: the claim's regime), or of every
finished seed when none did.
"""

import os
import time
from typing import Generator

from rl_align import claims
from rl_align import covariance
from rl_align import curves
from rl_align import errors
from rl_align import filters as lib
from rl_align import inputs
from rl_align import models
from rl_align import results
from rl_align import train
from rl_align.plots import filters as plots
from rl_align.runners import eigenmap
from rl_align.runners import phases

_KEYS = (
  "subspace_overlap",
  "random_baseline",
  "principal_cosines_top10",
  "overlap_matrix_top10",
  "best_match_pc",
  "best_match_cos",
  "best_match_cos_random",
  "eigenvalues_x",
  "eigenvalues_w",
)


@train.driven
def run(config, workdir: str) -> Generator:
  """Trains config.train.num_seeds seeds, pools first-layer filters, compares eigenvectors;
  returns the results dict (`run.steps`: the generator of its train call, `train.driven`)."""
  t0 = time.time()
  data = inputs.load(config, workdir)
  k = int(config.analysis.patch_size)
  part = data.parts["train"]
  _, cov_x = covariance.patch_covariance(
    part.batches(eigenmap.PATCH_BATCH), k, eigenmap.PATCH_BATCH
  )
  x, labels = data.engine_input("train", config.train, inputs.config_labels(config))
  res = yield train.call(models.build(config.model), config.train, x, labels, workdir=workdir)
  kernels = models.first_layer_kernel(res.params)
  if kernels.shape[1:3] != (k, k):
    raise errors.ConfigError(
      f"the first layer is {kernels.shape[1]}x{kernels.shape[2]} but analysis.patch_size={k}. "
      "Fix: make them equal (e.g. --config.analysis.patch_size=5)."
    )
  ok = curves.finished_seeds(res.diverged, len(kernels))
  out = {
    "train_accuracy": res.final_metrics.get("train_accuracy"),
    "diverged": res.diverged,
    "num_diverged": int((~ok).sum()),
    "num_filters_pooled": int(ok.sum()) * kernels.shape[-1],
    "num_train_examples": len(part),
  }
  if not ok.any():
    out.update(error=curves.all_diverged(len(ok)), runtime_s=time.time() - t0)
    out = phases.jsonable(out)
    out["claims"] = claims.stamp(config, out)
    results.write_json(workdir, "results.json", out)
    return out
  pool = claims.filters.pooled_seeds(out["train_accuracy"], int(config.num_classes), ~ok)
  cov_w = covariance.weight_covariance(kernels[pool], centered=config.analysis.centered)
  key = int(config.analysis.basis_seed)
  cmp = lib.compare_eigenvectors(cov_x, cov_w, key=key)
  n_filters = int(pool.sum()) * kernels.shape[-1]
  tests = lib.alignment_tests(
    cov_x, cov_w, n_filters, key, rtol=float(config.analysis.get("degenerate_rtol", 0.1))
  )
  out = {
    **{k: cmp[k] for k in _KEYS},
    **out,
    "alignment_tests": tests,
    "num_seeds_pooled": int(pool.sum()),
    "pooled": pool,
    "num_filters_pooled": n_filters,
    "figure": "fig3_eigenvectors.png",
    "runtime_s": time.time() - t0,
  }
  out = phases.jsonable(out)
  out["claims"] = claims.stamp(config, out)
  results.write_json(workdir, "results.json", out)
  results.write_npz(
    workdir,
    "arrays.npz",
    {
      "eigenvectors_x": cmp["eigenvectors_x"],
      "eigenvectors_w": cmp["eigenvectors_w"],
      "cov_x": cov_x,
      "cov_w": cov_w,
    },
  )
  plots.plot_eigenvectors(
    cmp["eigenvectors_x"],
    cmp["eigenvectors_w"],
    (k, k, part.example_shape[-1]),
    os.path.join(workdir, "fig3_eigenvectors.png"),
    matches=cmp,
  )
  return out
