r"""A packed sweep versus one run per point, side by side in one process tree.

Fig 20 right (d=30, 256-256, n=2000), 8 learning rates x 8 seeds, through the real binary:

- ``packed``: ``--sweep=train.learning_rate=...`` with ``--sweep_packing=on``: the 8 points'
  runners advance in lockstep (no threads) and their engine calls run as ONE program of 64 members
  (`rl_align.packing.run_lockstep`);
- ``per_point``: the same sweep with ``--sweep_packing=off``: 8 programs of 8 seeds, one after another.

Wall time includes start-up and compilation (each arm is a fresh process), as a user sees it.
Model-steps = members x steps.  The arms alternate over ``--repeats`` rounds; each arm's best round
counts.  The machine record (CPU, cores, measured fp32 matmul rate) is taken in the same run, and
the 1-minute load average before and after every arm (other jobs on a shared machine).

    python -m benchmarks.sweep_throughput --epochs=20 --json=/tmp/sweep_bench.json
"""

import sys
import tempfile

from absl import app
from absl import flags

from benchmarks import output
from rl_align import machine

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 20, "Epochs per point (the paper's 200 for the full run).")
flags.DEFINE_list(
  "learning_rates",
  ["0.005", "0.01", "0.015", "0.02", "0.03", "0.04", "0.05", "0.07"],
  "The swept learning rates (8 by default).",
)
flags.DEFINE_integer("seeds", 8, "Seeds per point.")
flags.DEFINE_integer("repeats", 1, "Rounds of both arms.")
flags.DEFINE_string("panel", "right", "Fig 20 panel.")
flags.DEFINE_string("json", None, "Where to write the results.")


def _arm(packing: str, workdir: str) -> tuple[float, list[float]]:
  """(wall seconds, [1-min load average before, after]) of one arm in a fresh process."""
  cmd = [
    sys.executable,
    "-m",
    "experiments.eigenvalue_map",
    f"--config=experiments/configs/fig20.py:{FLAGS.panel}",
    f"--workdir={workdir}",
    f"--config.train.num_epochs={FLAGS.epochs}",
    f"--config.train.num_seeds={FLAGS.seeds}",
    f"--config.train.snapshot_epochs=(0, {FLAGS.epochs})",
    f"--sweep=train.learning_rate={','.join(FLAGS.learning_rates)}",
    f"--sweep_packing={packing}",
  ]
  return output.timed_process(cmd, f"the {packing} arm")


def main(argv):
  del argv
  n, batch = 2000, 128
  steps = FLAGS.epochs * (n // batch)
  model_steps = len(FLAGS.learning_rates) * FLAGS.seeds * steps
  mach = machine.describe()
  best = {"packed": float("inf"), "per_point": float("inf")}
  rounds = []
  for r in range(FLAGS.repeats):
    order = ("packed", "per_point") if r % 2 == 0 else ("per_point", "packed")
    for arm in order:
      with tempfile.TemporaryDirectory() as wd:
        wall, load = _arm("on" if arm == "packed" else "off", wd)
      best[arm] = min(best[arm], wall)
      rounds.append(
        {
          "round": r,
          "arm": arm,
          "wall_s": round(wall, 2),
          "load_average_1min": [round(l, 2) for l in load],
        }
      )
  out = {
    "machine": mach,
    "panel": FLAGS.panel,
    "epochs": FLAGS.epochs,
    "points": len(FLAGS.learning_rates),
    "seeds": FLAGS.seeds,
    "steps_per_member": steps,
    "model_steps": model_steps,
    "arms": {
      a: {"wall_s": round(w, 2), "model_steps_per_s": round(model_steps / w, 1)}
      for a, w in best.items()
    },
    "packed_over_per_point": round(best["per_point"] / best["packed"], 3),
    "rounds": rounds,
  }
  output.emit(out, FLAGS.json)


if __name__ == "__main__":
  app.run(main)
