r"""The proposition, as a small experiment: SGD/momentum commute with Sigma_x-preserving rotations.

  python -m experiments.proposition --workdir=workdirs/proposition

Trains a dense net and a conv net from W on X and from O^T W on X O (same labels, same batch
order) for sgd, momentum and adam, and writes the largest relative gap ||W'_t - O^T W_t|| / ||W_t||
over snapshots to results.json (expected: ~1e-6 for sgd/momentum, >1e-2 for adam).
"""

from absl import app
from absl import flags
import numpy as np

from experiments import cli
from rl_align import models
from rl_align import results
from rl_align import seeds
from rl_align import symmetry
from rl_align.engine import config as engine_config

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Output folder.")
flags.DEFINE_integer("epochs", 5, "Epochs of each run.")


def _run(config, workdir):
  rng = np.random.default_rng(0)
  stds = np.array([2.0, 2.0, 2.0, 0.5, 0.5, 0.5])
  problems = {
    "dense": (
      models.DenseNet(widths=(64, 32), num_classes=4),
      (rng.normal(size=(256, 6)) * stds).astype(np.float32),
      symmetry.covariance_preserving_rotation(stds**2, key=3),
    ),
    "conv": (
      models.PaperCNN(features=16, kernel_size=3, hidden=16, num_classes=4),
      rng.normal(size=(256, 8, 8, 3)).astype(np.float32),
      symmetry.covariance_preserving_rotation(np.ones(3), key=5),
    ),
  }
  table = {}
  for name, (model, x, rotation) in problems.items():
    labels = seeds.random_labels(0, [0], len(x), 4)
    for opt in ("sgd", "momentum", "adam"):
      cfg = engine_config.default_config()
      cfg.update(
        num_seeds=1,
        num_epochs=config["epochs"],
        batch_size=32,
        learning_rate=0.05,
        optimizer=opt,
        snapshot_epochs=tuple(range(1, config["epochs"] + 1)),
        train_eval_examples=0,
        matmul_precision="highest",
      )
      gap = symmetry.equivariance_gap(model, cfg, x, labels, rotation)["max_rel_gap"]
      table[f"{name}/{opt}"] = gap
      print(f"{name:5s} {opt:8s} max relative gap {gap:.2e}")
  results.write_json(workdir, "results.json", table)
  return table


def main(argv):
  del argv
  cli.run_main(_run, {"epochs": FLAGS.epochs}, FLAGS.workdir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main, flags_parser=cli.parse_flags)
