r"""Specialization and negative transfer (the paper's section 3): upstream random labels, then real labels.

  python -m experiments.specialization --config=experiments/configs/specialization.py:local --workdir=workdirs/specialization
  python -m experiments.specialization --config=experiments/configs/specialization.py:vgg16_cifar10 --workdir=...

Sweeps the width of the later layers x learning rate x number of random classes K x upstream
length; for each point: the downstream speed-up over scratch (`gain`) and per-layer ReLU activity
across the switch.  Writes WORKDIR/w=<width>_lr=<lr>/ (engine metrics, checkpoints, points.json per
cell), WORKDIR/results.json, specialization_activity.png and specialization_gain.png.  Rerunning the
same command resumes (finished cells are read back, the running one restarts from its checkpoint).
"""

from experiments import cli
from rl_align import specialization
from rl_align.runners import specialization as spec_runner

cli.define_config_flags("experiments/configs/specialization.py:local")

if __name__ == "__main__":
  cli.launch(spec_runner.run, specialization.summary_table)
