r"""One-field sweeps of an eigenvalue-map config, scored against the paper's values.

  python -m experiments.sweep --config=experiments/configs/fig20.py:all \
      --field=train.learning_rate --values=0.01,0.02,0.03 --workdir=workdirs/fig20_lr_sweep

Writes WORKDIR/<field>=<value>/ (a full eigenvalue_map run each; reruns resume) and
WORKDIR/sweep.json with every panel's checks (rmse_vs_paper, peak, plateau, seed spread).
"""
import ast

from absl import flags

from rl_align import eigenmap
from rl_align import experiment

FLAGS = flags.FLAGS
experiment.define_config_flags("experiments/configs/fig20.py:all")
flags.DEFINE_string("field", "train.learning_rate", "Dotted config field to sweep.")
flags.DEFINE_list("values", [], "Comma-separated values (Python literals).")


def _run(config, workdir):
  values = [ast.literal_eval(v) for v in FLAGS.values]
  if not values:
    raise experiment.errors.ConfigError("--values is empty. Fix: e.g. --values=0.01,0.02.")
  table = eigenmap.run_sweep(config, workdir, FLAGS.field, values)
  for value, panels in table.items():
    cells = "  ".join(f"{p}: rmse {c['rmse_vs_paper']:.4f} peak {c['peak_f']:.3f}@{c['peak_sigma']:.1f}"
                      for p, c in panels.items())
    print(f"{FLAGS.field}={value}  {cells}")
  return table


if __name__ == "__main__":
  experiment.launch(_run)
