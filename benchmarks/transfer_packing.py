r"""The transfer arms packed into one program versus one program per arm, side by side.

Fig 5 on Fashion-MNIST (`fig5.py:fmnist`: the paper CNN at 64 filters, its five arms) at a mid
size set by the flags, run through the runner from a fresh process per arm of the benchmark:

- ``packed``: the runner yields the arms as one list of calls; the engine runs them as ONE program
  (`rl_align.train.drive`, the default since the arms became a list);
- ``per_arm``: the same list, each call as its own program (`train.drive(..., packing=False)`):
  what the runner did before, one arm after another.

Both give bitwise the same results.json (checked here on every round).  Wall time includes
start-up, data, compilation and the upstream phase (the same in both), as a user sees it.  The
arms alternate over ``--repeats`` rounds; each arm's best round counts; the machine record (CPU,
cores, measured fp32 matmul rate) and the 1-minute load average around every run are kept.

    python -m benchmarks.transfer_packing --seeds=8 --upstream_steps=200 --downstream_steps=200 \\
        --repeats=2 --json=/tmp/transfer_packing.json
"""

import json
import os
import sys
import tempfile

from absl import app
from absl import flags

from benchmarks import output
from rl_align import machine

FLAGS = flags.FLAGS
flags.DEFINE_integer("seeds", 8, "Seeds per arm.")
flags.DEFINE_integer("upstream_steps", 200, "Upstream steps.")
flags.DEFINE_integer("downstream_steps", 200, "Downstream steps per arm.")
flags.DEFINE_integer("repeats", 2, "Rounds of both arms.")
flags.DEFINE_string("json", None, "Where to write the results.")
flags.DEFINE_string("child", "", "(internal) run one arm: packed | per_arm, in WORKDIR.")
flags.DEFINE_string("workdir", "", "(internal) the child's workdir.")


def _config():
  from experiments.configs import fig5  # pylint: disable=import-outside-toplevel

  c = fig5.get_config("fmnist")
  c.train.num_seeds = FLAGS.seeds
  c.upstream.num_steps = FLAGS.upstream_steps
  c.downstream.num_steps = FLAGS.downstream_steps
  return c


def _child() -> None:
  """One arm of the benchmark: the transfer runner with its arms packed or not."""
  from rl_align import train  # pylint: disable=import-outside-toplevel
  from rl_align.runners import transfer  # pylint: disable=import-outside-toplevel

  train.drive(transfer.run.steps(_config(), FLAGS.workdir), packing=FLAGS.child == "packed")


def _arm(name: str, workdir: str) -> tuple[float, list[float], dict]:
  """(wall seconds, load before / after, results.json) of one arm in a fresh process."""
  cmd = [
    sys.executable,
    "-m",
    "benchmarks.transfer_packing",
    f"--child={name}",
    f"--workdir={workdir}",
    f"--seeds={FLAGS.seeds}",
    f"--upstream_steps={FLAGS.upstream_steps}",
    f"--downstream_steps={FLAGS.downstream_steps}",
  ]
  wall, load = output.timed_process(cmd, f"the {name} arm")
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    res = json.load(f)
  return wall, load, res


def _comparable(res: dict) -> dict:
  drop = ("runtime_s", "claims", "figure")
  out = {k: v for k, v in res.items() if k not in drop}
  out["arms"] = {
    a: {k: v for k, v in e.items() if k != "runtime_s"} for a, e in res["arms"].items()
  }
  return out


def main(argv):
  del argv
  if FLAGS.child:
    _child()
    return
  rounds = []
  for r in range(FLAGS.repeats):
    order = ("packed", "per_arm") if r % 2 == 0 else ("per_arm", "packed")
    got = {}
    for name in order:
      with tempfile.TemporaryDirectory() as wd:
        got[name] = _arm(name, wd)
    same = _comparable(got["packed"][2]) == _comparable(got["per_arm"][2])
    rounds.append({n: {"wall_s": g[0], "load": g[1]} for n, g in got.items()} | {"bitwise": same})
    print(
      f"round {r}: packed {got['packed'][0]:.1f} s, per_arm {got['per_arm'][0]:.1f} s, "
      f"results equal: {same}",
      flush=True,
    )
  best = {n: min(r[n]["wall_s"] for r in rounds) for n in ("packed", "per_arm")}
  c = _config()
  out = {
    "benchmark": "transfer_packing",
    "config": "fig5.py:fmnist",
    "seeds": FLAGS.seeds,
    "arms": list(c.arms),
    "upstream_steps": FLAGS.upstream_steps,
    "downstream_steps": FLAGS.downstream_steps,
    "rounds": rounds,
    "best_wall_s": best,
    "per_arm_over_packed": best["per_arm"] / best["packed"],
    "machine": machine.describe(),
  }
  output.emit(out, FLAGS.json)


if __name__ == "__main__":
  app.run(main)
