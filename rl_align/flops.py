"""FLOP accounting: the matmul / conv FLOPs of a jaxpr, and a ledger of a job's training FLOPs.

    from rl_align import flops
    n = flops.dot_conv_flops(jax.make_jaxpr(step)(*args))     # 2 x multiply-adds of every dot/conv
    ledger = flops.Ledger()
    train.drive(train.recorded(runner.steps(config, workdir), ledger))   # its calls record here
    ledger.total                            # FLOPs of the training steps that ran
    ledger.records                          # one dict per engine call: name, step_flops, steps, ...

`dot_conv_flops` counts 2 x multiply-adds of every dot_general and convolution in a jaxpr
(sub-jaxprs included; a scan body counts `length` times).  Count on a straight-line step (the
naive per-seed step with lax convolutions): other loops and Pallas kernels are counted once per
appearance, not per iteration or program.  Elementwise ops (activations, the loss, the optimizer)
are not counted: for the models here they are a small share of the work.

The engine (`rl_align.train`) records each call's training FLOPs when its steps have run: the
nominal FLOPs of ONE member's ONE training step (forward, backward and update of a batch; its jaxpr
traced once per compiled program on abstract shapes, `Engine.step_flops`) x the steps run in this
process (a resumed run counts only the steps after its checkpoint) x the call's members (padding
members the engine adds to fill the devices are not counted: their work is waste).  Evaluations,
probes and snapshots are not counted.  A call is recorded in the ledger it carries
(`TrainCall.ledger`), handed to it explicitly where the run records itself (`train.recorded`); a
sweep gives each point's runner the point's own ledger, so the points of a packed program each
count their own calls.
"""

from typing import Any

import numpy as np


def dot_conv_flops(jaxpr) -> float:
  """FLOPs (2 x multiply-adds) of the dot_general and conv ops of a (closed) jaxpr, recursively."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (lc, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[d] for d in lc])
    elif name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      dn = eqn.params["dimension_numbers"]
      out_feature = rhs[dn.rhs_spec[0]]
      per_out = np.prod(rhs) / out_feature  # k*k*C_in/groups
      total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * per_out
    times = eqn.params.get("length", 1) if name == "scan" else 1
    for sub in _sub_jaxprs(eqn.params.values()):
      total += times * dot_conv_flops(sub)
  return float(total)


def _sub_jaxprs(values):
  for v in values:
    if hasattr(v, "eqns"):
      yield v
    elif hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
      yield v.jaxpr
    elif isinstance(v, (tuple, list)):
      yield from _sub_jaxprs(v)


# ----------------------------------------------------------------------------------------------
# The ledger.


class Ledger:
  """The training FLOPs of the engine calls that carried it (module docstring)."""

  def __init__(self):
    self.records: list[dict[str, Any]] = []

  def record(
    self,
    name: str,
    step_flops: float,
    steps: int,
    members: int,
    seconds: dict[str, float] | None = None,
  ) -> dict[str, Any]:
    """Adds one engine call's record {name, step_flops, steps, members, flops, seconds};
    seconds: its wall time per phase (`rl_align.progress.Phases`: train, compile, eval, snapshot,
    checkpoint, log), a packed call's share of its program's."""
    rec = {
      "name": name,
      "step_flops": float(step_flops),
      "steps": int(steps),
      "members": int(members),
      "flops": float(step_flops) * int(steps) * int(members),
      "seconds": dict(seconds or {}),
    }
    self.records.append(rec)
    return rec

  @property
  def total(self) -> float:
    return float(sum(r["flops"] for r in self.records))

  @property
  def seconds(self) -> dict[str, float]:
    """Wall time per phase, summed over the records."""
    out: dict[str, float] = {}
    for r in self.records:
      for k, v in r.get("seconds", {}).items():
        out[k] = out.get(k, 0.0) + v
    return out


def accounting(
  total_flops: float,
  wall_s: float,
  peak_gflops: float | None,
  seconds: dict[str, float] | None = None,
) -> dict[str, Any]:
  """{flops, wall_s, gflops_per_s, peak_gflops, fraction_of_peak} of a job (None where unknown).

  With `seconds` (wall time per phase, `Ledger.seconds`) also `phases`: those seconds plus
  "other" (the wall time outside the engine's phases: start-up, data, analysis, plots), and the
  rate and fraction of peak over the training steps' time alone (`train_gflops_per_s`,
  `train_fraction_of_peak`): how fast the steps ran, apart from what surrounds them."""
  rate = total_flops / wall_s / 1e9 if wall_s > 0 else None
  frac = rate / peak_gflops if rate is not None and peak_gflops else None
  out = {
    "flops": float(total_flops),
    "wall_s": float(wall_s),
    "gflops_per_s": rate,
    "peak_gflops": peak_gflops,
    "fraction_of_peak": frac,
  }
  if seconds is not None:
    phases = dict(sorted(seconds.items()))
    phases["other"] = max(wall_s - sum(seconds.values()), 0.0)
    train_s = seconds.get("train", 0.0)
    train_rate = total_flops / train_s / 1e9 if train_s > 0 else None
    out.update(
      phases=phases,
      train_gflops_per_s=train_rate,
      train_fraction_of_peak=(
        train_rate / peak_gflops if train_rate is not None and peak_gflops else None
      ),
    )
  return out


def _human(flops: float) -> str:
  for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
    if flops >= scale:
      return f"{flops / scale:.1f} {unit}"
  return f"{flops:.0f} FLOP"


def _number(v: float, decimals: int) -> str:
  """v with `decimals` decimals, or 2 significant digits when that would show 0 (tiny runs)."""
  return f"{v:.{decimals}f}" if v == 0 or abs(v) >= 10.0**-decimals else f"{v:.2g}"


def summary_line(acc: dict[str, Any]) -> str:
  """'done: 69.1 TFLOP in 755 s = 91.5 GFLOP/s, 47% of the measured peak 195 GFLOP/s (...)'."""
  line = f"done: {_human(acc['flops'])} in {acc['wall_s']:.0f} s"
  if acc["gflops_per_s"] is not None:
    line += f" = {_number(acc['gflops_per_s'], 1)} GFLOP/s"
  if acc["fraction_of_peak"] is not None:
    line += (
      f", {_number(100 * acc['fraction_of_peak'], 0)}% of the measured peak "
      f"{acc['peak_gflops']:.0f} GFLOP/s"
    )
  line += " (training steps' matmul/conv FLOPs)"
  phases = acc.get("phases")
  if phases:
    line += "; where the time went: " + ", ".join(
      f"{k} {v:.0f} s" for k, v in sorted(phases.items(), key=lambda kv: -kv[1]) if v >= 0.5
    )
    if acc.get("train_gflops_per_s") is not None:
      line += f"; the training steps alone {_number(acc['train_gflops_per_s'], 1)} GFLOP/s"
      if acc.get("train_fraction_of_peak") is not None:
        line += f" ({_number(100 * acc['train_fraction_of_peak'], 0)}% of peak)"
  return line
