r"""Fig 3: top eigenvectors of the pooled first-layer filter covariance beside the patch PCs.

  python -m experiments.filters --config=experiments/configs/fig3.py:local --workdir=workdirs/fig3_local

Writes results.json (top-k eigenspace overlaps vs a random-subspace baseline, principal cosines),
arrays.npz and fig3_eigenvectors.png.  Rerunning resumes.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from rl_align import experiment
from rl_align import filters

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "e.g. experiments/configs/fig3.py:local")
flags.DEFINE_string("workdir", None, "Output folder; rerunning on it resumes.")


def main(argv):
  del argv
  experiment.run_main(filters.run, FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
