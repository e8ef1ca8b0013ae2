r"""Specialization and negative transfer (PAPER.md section 3): upstream random labels, then real labels.

  python -m experiments.specialization --config=experiments/configs/specialization.py:local --workdir=workdirs/specialization
  python -m experiments.specialization --config=experiments/configs/specialization.py:vgg16_cifar10 --workdir=...

Sweeps the width of the later layers x learning rate x number of random classes K x upstream
length; for each point: the downstream speed-up over scratch (`gain`) and per-layer ReLU activity
across the switch.  Writes WORKDIR/w=<width>_lr=<lr>/ (engine metrics, checkpoints, points.json per
cell), WORKDIR/results.json, specialization_activity.png and specialization_gain.png.  Rerunning the
same command resumes (finished cells are read back, the running one restarts from its checkpoint).
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from rl_align import experiment
from rl_align import specialization

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. experiments/configs/specialization.py:local")
flags.DEFINE_string("workdir", None, "Output folder; rerunning on it resumes.")


def _run(config, workdir):
  out = specialization.run(config, workdir)
  print(specialization.summary_table(out))
  return out


def main(argv):
  del argv
  experiment.run_main(_run, FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
