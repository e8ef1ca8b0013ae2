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

from experiments import cli
from rl_align import transfer
from rl_align.runners import transfer as transfer_runner

cli.define_config_flags("experiments/configs/fig5.py:local")

if __name__ == "__main__":
  cli.launch(transfer_runner.run, transfer.summary_table)
