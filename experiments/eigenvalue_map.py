r"""The eigenvalue map f and first-layer alignment (Figs 4, 20).

  python -m experiments.eigenvalue_map --config=experiments/configs/fig20.py:all --workdir=workdirs/fig20
  python -m experiments.eigenvalue_map --config=experiments/configs/fig4_cnn.py:random,local --workdir=...

Each panel of the config runs in WORKDIR/<panel>/ (config.json, metrics.jsonl, results.json,
arrays.npz, eigenmap.png); WORKDIR gets the joint figure and a summary results.json.  Rerunning the
same command resumes.  See the README for the results.json schema.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from rl_align import eigenmap
from rl_align import experiment

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. experiments/configs/fig20.py:all")
flags.DEFINE_string("workdir", None, "Output folder; rerunning on it resumes.")


def main(argv):
  del argv
  experiment.run_main(eigenmap.run_panels, FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
