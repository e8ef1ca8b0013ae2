r"""Where the main job's time goes (Fig 20, `fig20.py:all`), and how fast its steps could run.

Three measurements, in one run, on one machine (its record is taken first: CPU, cores, the fp32
matmul peak of `rl_align.machine`):

1. **The ceiling of one step's matmuls.**  The dot_generals of one Fig 20 step (a member's
   forward, backward and update at batch 128: `Engine.step_flops`' jaxpr), each timed alone as a
   compiled op on the default device (all cores): their FLOPs over their summed time is the rate
   a step could reach if nothing but its matmuls took time, at the step's own shapes.
2. **The engine's steps alone**, for the member layouts the main job can use: `--devices` (the
   XLA host devices the 5 members are sharded over; 5 members on 2 devices are padded to 6) in
   alternating rounds, each arm's best.  `Engine.chunk` on device-resident data, compile excluded.
   With `--unguarded`, one more 1-device arm whose step has no divergence guard (no gradient norm,
   no cond on it): what the guard costs.
3. **One panel end to end** through the binary (`--panel`, `--epochs`), a fresh process per arm:
   the wall time and run.json's `accounting.phases` (training steps, compile, eval, snapshots,
   checkpoints, log, other), per `--config.train.num_devices` arm.

    python -m benchmarks.main_job --epochs=20 --repeats=2 --json=/tmp/main_job.json
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import output

FLAGS = flags.FLAGS
flags.DEFINE_string(
  "panel", "left", "Fig 20 panel (left / middle: d=10 / 30, 2048-256; right: 256-256)."
)
flags.DEFINE_integer("epochs", 20, "Epochs of the end-to-end arms (the main job runs 200).")
flags.DEFINE_integer("chunk_steps", 390, "Steps per timed engine chunk (section 2).")
flags.DEFINE_integer("repeats", 2, "Alternating rounds of every arm.")
flags.DEFINE_list("devices", ["2", "1"], "Device counts compared (sections 2 and 3).")
flags.DEFINE_bool(
  "unguarded",
  True,
  "Section 2 also times a 1-device arm whose step has no "
  "divergence guard (what the guard costs; not a layout the engine offers).",
)
flags.DEFINE_bool("end_to_end", True, "Run section 3 (a fresh binary per arm).")
flags.DEFINE_string("json", None, "Where to write the results.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PANELS = {
  "left": (10, (2048, 256), 10_000),
  "middle": (30, (2048, 256), 10_000),
  "right": (30, (256, 256), 2_000),
}


def _setup(n_devices: int):
  """The panel's engine pieces on the first n_devices devices (cfg, model, x, labels)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from rl_align import models  # pylint: disable=import-outside-toplevel
  from rl_align.engine import config as engine_config  # pylint: disable=import-outside-toplevel

  d, widths, n = _PANELS[FLAGS.panel]
  cfg = engine_config.default_config()
  cfg.update(
    num_seeds=5,
    optimizer="momentum",
    learning_rate=0.02,
    momentum=0.9,
    batch_size=128,
    num_epochs=200,
    num_devices=n_devices,
  )
  rng = np.random.RandomState(0)
  x = rng.randn(n, d).astype(np.float32)
  labels = rng.randint(0, 10, (5, n)).astype(np.int32)
  return cfg, models.DenseNet(widths=widths, num_classes=10), x, labels


def matmul_ceiling() -> dict:
  """Section 1: every dot_general of one member's step, timed alone (best of 5 x 50 calls)."""
  import jax  # pylint: disable=import-outside-toplevel
  from jax import lax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from rl_align.engine import programs  # pylint: disable=import-outside-toplevel

  cfg, model, x, _ = _setup(1)
  eng = programs.Engine(model, cfg, x.shape, 1)
  mb = eng.member
  params, opt_state = jax.eval_shape(lambda: mb.init(jax.random.key_data(jax.random.key(0))))
  xb = jax.ShapeDtypeStruct((mb.batch,) + mb.example_shape, jnp.float32)
  yb = jax.ShapeDtypeStruct((mb.batch,), jnp.int32)
  jaxpr = jax.make_jaxpr(lambda p, o, a, b: mb.step(mb.tx, p, o, jnp.bool_(True), a, b))(
    params, opt_state, xb, yb
  )
  dots = []

  def walk(jx):
    for eqn in jx.eqns:
      if eqn.primitive.name == "dot_general":
        out = eqn.outvars[0]
        users = [e for e in jx.eqns if out in e.invars]
        # XLA folds a transpose of a dot's output into the dot (it swaps the operands): the
        # weight gradients are dot -> transpose in the jaxpr and one dot in the compiled step.
        perm = (
          users[0].params["permutation"]
          if len(users) == 1 and users[0].primitive.name == "transpose"
          else None
        )
        dots.append(
          (
            eqn.invars[0].aval.shape,
            eqn.invars[1].aval.shape,
            eqn.params["dimension_numbers"],
            out.aval.shape,
            perm,
          )
        )
      for v in eqn.params.values():
        sub = getattr(v, "jaxpr", v)
        if hasattr(sub, "eqns"):
          walk(sub)

  walk(jaxpr.jaxpr)
  rng, timed = jax.random.key(1), []
  for lhs, rhs, dn, out, perm in dots:
    a = jax.random.normal(rng, lhs, jnp.float32)
    b = jax.random.normal(rng, rhs, jnp.float32)
    f = jax.jit(
      lambda a, b, dn=dn, perm=perm: (lambda r: r if perm is None else r.transpose(perm))(
        lax.dot_general(a, b, dn)
      )
    )
    f(a, b).block_until_ready()
    timed.append((f, a, b, [float("inf")]))
  for _ in range(5):  # round-robin, so that a slow moment of a shared machine hits every dot
    for f, a, b, best in timed:
      t = time.perf_counter()
      for _ in range(50):
        r = f(a, b)
      r.block_until_ready()
      best[0] = min(best[0], (time.perf_counter() - t) / 50)
  rows, total_flops, total_s = [], 0.0, 0.0
  for (lhs, rhs, dn, out, perm), (_, _, _, (best,)) in zip(dots, timed):
    (lc, _), _ = dn
    flops = 2.0 * float(np.prod(out)) * float(np.prod([lhs[i] for i in lc]))
    rows.append(
      {
        "lhs": list(lhs),
        "rhs": list(rhs),
        "contracting": [list(c) for c in dn[0]],
        "then_transpose": perm is not None,
        "flops": flops,
        "ms": round(best * 1e3, 4),
        "gflops_per_s": round(flops / best / 1e9, 1),
      }
    )
    total_flops += flops
    total_s += best
  return {
    "dots": rows,
    "step_flops": eng.step_flops,
    "dot_flops": total_flops,
    "dots_ms": round(total_s * 1e3, 3),
    "gflops_per_s": round(total_flops / total_s / 1e9, 1),
  }


def _unguarded_step(self, tx, params, opt_state, alive, xb, yb):
  """`Member.step` without the divergence guard (no gradient norm, no cond on it)."""
  (loss, acc), grads = self.batch_grads(params, xb, yb)
  return (*self.update(tx, params, opt_state, grads), alive, loss, acc)


def engine_rates() -> dict:
  """Section 2: model-steps/s of Engine.chunk per device count, alternating rounds, best kept."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from rl_align import seeds  # pylint: disable=import-outside-toplevel
  from rl_align.engine import programs  # pylint: disable=import-outside-toplevel

  arms, names = {}, list(FLAGS.devices) + (["1/unguarded"] if FLAGS.unguarded else [])
  for name in names:
    cfg, model, x, labels = _setup(int(name.split("/")[0]))
    guarded = programs.Member.step
    if name.endswith("/unguarded"):
      programs.Member.step = _unguarded_step  # traced by the compile below, then restored
    try:
      eng = programs.Engine(model, cfg, x.shape, 5)
      members = seeds.Members.of(cfg).padded(eng.m_pad)
      state, inputs = eng.initial_state(members), eng.put_inputs(members, x, labels)
      state, loss, _ = eng.chunk(state, inputs, np.int32(0), np.int32(8))  # compile
      jax.block_until_ready(loss)
    finally:
      programs.Member.step = guarded
    arms[name] = {"eng": eng, "state": state, "inputs": inputs, "best": float("inf"), "t": 8}
  rounds = []
  for r in range(FLAGS.repeats):
    for nd in names if r % 2 == 0 else names[::-1]:
      a, t0 = arms[nd], arms[nd]["t"]
      t = time.perf_counter()
      a["state"], loss, _ = a["eng"].chunk(
        a["state"], a["inputs"], np.int32(t0), np.int32(t0 + FLAGS.chunk_steps)
      )
      jax.block_until_ready(loss)
      dt = time.perf_counter() - t
      a["t"] += FLAGS.chunk_steps
      a["best"] = min(a["best"], dt)
      rounds.append(
        {"round": r, "devices": nd, "s": round(dt, 3), "load_average_1min": os.getloadavg()[0]}
      )
  out = {"rounds": rounds, "arms": {}}
  for nd, a in arms.items():
    ms = 5 * FLAGS.chunk_steps / a["best"]
    out["arms"][nd] = {
      "m_pad": a["eng"].m_pad,
      "layout": a["eng"].layout.name,
      "model_steps_per_s": round(ms, 1),
      "gflops_per_s": round(ms * a["eng"].step_flops / 1e9, 1),
    }
  return out


def _binary(n_devices: str, workdir: str) -> dict:
  cmd = [
    sys.executable,
    "-m",
    "experiments.eigenvalue_map",
    f"--config=experiments/configs/fig20.py:{FLAGS.panel}",
    f"--workdir={workdir}",
    f"--config.train.num_epochs={FLAGS.epochs}",
    f"--config.train.num_devices={n_devices}",
    f"--config.train.snapshot_epochs=(0, 1, 2, 5, 10, {FLAGS.epochs})",
  ]
  t = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  wall = time.perf_counter() - t
  if proc.returncode != 0:
    raise SystemExit(f"error: the {n_devices}-device arm failed: {proc.stderr[-2000:]}")
  with open(os.path.join(workdir, "run.json")) as f:
    acc = json.load(f)["accounting"]
  return {
    "process_wall_s": round(wall, 2),
    "run_wall_s": round(acc["wall_s"], 2),
    "gflops_per_s": round(acc["gflops_per_s"], 1),
    "train_gflops_per_s": round(acc["train_gflops_per_s"], 1),
    "phases": acc["phases"],
  }


def end_to_end() -> dict:
  """Section 3: the binary per device count, alternating rounds, each arm's fastest round."""
  best, rounds = {}, []
  for r in range(FLAGS.repeats):
    for nd in FLAGS.devices if r % 2 == 0 else FLAGS.devices[::-1]:
      with tempfile.TemporaryDirectory() as wd:
        res = _binary(nd, wd)
      res.update(round=r, devices=nd, load_average_1min=os.getloadavg()[0])
      rounds.append(res)
      if nd not in best or res["run_wall_s"] < best[nd]["run_wall_s"]:
        best[nd] = res
  return {"rounds": rounds, "best": best}


def main(argv):
  del argv
  from experiments import host_devices  # pylint: disable=import-outside-toplevel

  host_devices.expose_host_cores()
  from rl_align import machine  # pylint: disable=import-outside-toplevel

  out = {
    "machine": machine.describe(),
    "panel": FLAGS.panel,
    "epochs": FLAGS.epochs,
    "chunk_steps": FLAGS.chunk_steps,
    "repeats": FLAGS.repeats,
  }
  peak = out["machine"]["fp32_matmul_gflops"]
  out["ceiling"] = matmul_ceiling()
  out["ceiling"]["fraction_of_peak"] = round(out["ceiling"]["gflops_per_s"] / peak, 3)
  out["engine"] = engine_rates()
  for arm in out["engine"]["arms"].values():
    arm["fraction_of_peak"] = round(arm["gflops_per_s"] / peak, 3)
  if FLAGS.end_to_end:
    out["end_to_end"] = end_to_end()
  output.emit(out, FLAGS.json)


if __name__ == "__main__":
  app.run(main)
