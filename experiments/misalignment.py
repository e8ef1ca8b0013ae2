r"""Fig 2: first-layer misalignment over training, in the data eigenbasis vs a random basis.

  python -m experiments.misalignment --config=experiments/configs/fig2.py:random,real,local --workdir=DIR

Each panel (label kind) runs in DIR/<panel>/; DIR/fig2_misalignment.png draws both panels with seed
bands and the finite-sample floor.  results.json per panel has `snapshots` (see README schema).
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from rl_align import eigenmap
from rl_align import experiment

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "e.g. experiments/configs/fig2.py:random,real,local")
flags.DEFINE_string("workdir", None, "Output folder; rerunning on it resumes.")


def main(argv):
  del argv
  experiment.run_main(eigenmap.run_misalignment, FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
