r"""Fig 2: first-layer misalignment over training, in the data eigenbasis vs a random basis.

  python -m experiments.misalignment --config=experiments/configs/fig2.py:random,real,local --workdir=DIR

Each panel (label kind) runs in DIR/<panel>/; DIR/fig2_misalignment.png draws both panels with seed
bands and the finite-sample floor.  results.json per panel has `snapshots` (see README schema).
"""

from experiments import cli
from rl_align.runners import eigenmap as eigenmap_runner

cli.define_config_flags("experiments/configs/fig2.py:random,real,local")

if __name__ == "__main__":
  cli.launch(eigenmap_runner.run_misalignment)
