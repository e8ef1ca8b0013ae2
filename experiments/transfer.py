r"""Transfer after random-label pretraining; covariance-aligned initialization (Figs 1 and 5, 2.5).

  python -m experiments.transfer --config=experiments/configs/fig5.py:local --workdir=/tmp/fig5_local
  python -m experiments.transfer --config=experiments/configs/fig5.py --workdir=workdirs/fig5
  python -m experiments.transfer --config=experiments/configs/fig1.py:positive --workdir=workdirs/fig1_pos

Trains the upstream seeds on random labels, then every arm of config.arms downstream (scratch,
pretrained, pretrained_no_rescaling, covariance, covariance_L<n>, pca_whitening, f_only), and writes
WORKDIR/results.json (schema in rl_align/transfer.py and the README), metrics.jsonl, the figure and
one summary per phase in WORKDIR/phases/.  Rerunning the same command resumes; a finished run is
only re-summarized.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from rl_align import experiment
from rl_align import transfer

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. experiments/configs/fig5.py:local")
flags.DEFINE_string("workdir", None, "Output folder; rerunning on it resumes.")


def _run(config, workdir):
  out = transfer.run(config, workdir)
  print(transfer.summary_table(out))
  return out


def main(argv):
  del argv
  experiment.run_main(_run, FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
