r"""The eigenvalue map f and first-layer alignment (Figs 4, 20).

  python -m experiments.eigenvalue_map --config=experiments/configs/fig20.py:all --workdir=workdirs/fig20
  python -m experiments.eigenvalue_map --config=experiments/configs/fig4_cnn.py:random,local --workdir=...

Each panel of the config runs in WORKDIR/<panel>/ (config.json, metrics.jsonl, results.json,
arrays.npz, eigenmap.png); WORKDIR gets the joint figure and a summary results.json.  Rerunning the
same command resumes.  See the README for the results.json schema.
"""

from experiments import cli
from rl_align.runners import eigenmap as eigenmap_runner

cli.define_config_flags("experiments/configs/fig20.py:all")

if __name__ == "__main__":
  cli.launch(eigenmap_runner.run_panels)
