r"""Fig 3: top eigenvectors of the pooled first-layer filter covariance beside the patch PCs.

  python -m experiments.filters --config=experiments/configs/fig3.py:local --workdir=workdirs/fig3_local

Writes results.json (top-k eigenspace overlaps vs a random-subspace baseline, principal cosines),
arrays.npz and fig3_eigenvectors.png.  Rerunning resumes.
"""

from experiments import cli
from rl_align.runners import filters as filters_runner

cli.define_config_flags("experiments/configs/fig3.py:local")

if __name__ == "__main__":
  cli.launch(filters_runner.run)
