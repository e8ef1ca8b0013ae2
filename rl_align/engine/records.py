"""What a run records: each call's metrics rows (in memory, and to the metric writer it was given:
`rl_align.metric_writers`) and snapshots (in memory and in its workdir, for resume), the steps
they happen at, and the eval sets as whole batches."""

import os
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from rl_align import metric_writers
from rl_align import results as results_lib


def first_layer_snapshot(params) -> dict[str, np.ndarray]:
  """Default snapshot: the first layer's kernel (first entry of the params dict)."""
  first = next(iter(params))
  return {"first_kernel": np.asarray(params[first]["kernel"])}


class CallRecords:
  """One call's share of a (possibly packed) run: its members `sl` of the member axis (seed ids
  `ids`), its metrics rows (reported to `writer`) and snapshots (written to its workdir by the
  main process)."""

  def __init__(
    self,
    name: str,
    workdir: str | None,
    ids: Sequence[int],
    sl: slice,
    snapshot_fn: Callable[[object], Mapping[str, np.ndarray]],
    writer: metric_writers.MetricWriter,
    tag: str = "",
  ):
    self.name, self.workdir, self.ids, self.sl = name, workdir, list(ids), sl
    self.snapshot_fn, self.writer, self.part = snapshot_fn, writer, tag
    self.snapshots: dict[int, dict[str, np.ndarray]] = {}
    self.metrics: list[dict] = []
    # WORKDIR/<name>_snapshots, or its subfolder `tag` when other calls of the run share the phase
    self.snap_dir = (
      (
        os.path.join(workdir, f"{name}_snapshots", tag)
        if tag
        else os.path.join(workdir, f"{name}_snapshots")
      )
      if workdir
      else None
    )

  def resume(self, step: int) -> None:
    """Reloads the rows (the writer drops this phase's rows after `step`) and snapshots up to
    `step`."""
    self.metrics = self.writer.read_rows(self.name, step, self.part)
    if self.snap_dir and os.path.isdir(self.snap_dir):
      for f in sorted(os.listdir(self.snap_dir)):
        if f.startswith("step_") and f.endswith(".npz") and int(f[5:-4]) <= step:
          self.snapshots[int(f[5:-4])] = results_lib.read_npz(self.snap_dir, f)

  def snapshot(self, step: int, host_params, is_main: bool) -> None:
    self.snapshots[step] = self.snapshot_fn(jax.tree.map(lambda a: a[self.sl], host_params))
    if self.snap_dir and is_main:
      results_lib.write_npz(self.snap_dir, f"step_{step:08d}.npz", self.snapshots[step])

  def log(self, step: int, spe: int, host: Mapping[str, np.ndarray]) -> None:
    part = {"part": self.part} if self.part else {}
    rows = [
      {
        "phase": self.name,
        **part,
        "step": step,
        "epoch": step / spe,
        "seed": sid,
        **{k: v[self.sl][i] for k, v in host.items()},
      }
      for i, sid in enumerate(self.ids)
    ]
    self.metrics.extend(rows)
    self.writer.write_rows(rows)


def event_steps(cfg, total: int, spe: int):
  """(snapshot steps, log steps, eval steps) of a run of `total` steps, `spe` per epoch."""
  log_every = cfg.log_every_steps or spe
  eval_every = cfg.eval_every_steps or log_every
  snaps = {int(s) for s in cfg.snapshot_steps} | {int(e * spe) for e in cfg.snapshot_epochs}
  snaps = {s for s in snaps if 0 <= s <= total}
  logs = set(range(log_every, total + 1, log_every)) | {total}
  evals = set(range(eval_every, total + 1, eval_every)) | {total}
  return snaps, logs, evals


def mean_finite(v) -> float:
  """Mean over the members that have a finite value (NaN when none has: every one diverged)."""
  v = np.asarray(v, np.float64)
  ok = np.isfinite(v)
  return float(v[ok].mean()) if ok.any() else float("nan")


def eval_batches(x, y, m: int, batch_size: int):
  """Pads an eval set to whole batches: xs [nb, B, ...], ys [m, nb, B], mask [nb, B]."""
  k = x.shape[0]
  bs = min(batch_size, k)
  nb = -(-k // bs)
  pad = nb * bs - k
  xs = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]).reshape((nb, bs) + x.shape[1:])
  y = np.broadcast_to(np.asarray(y), (m, k))
  ys = np.concatenate([y, np.zeros((m, pad), y.dtype)], axis=1).reshape(m, nb, bs)
  mask = np.concatenate([np.ones(k, np.float32), np.zeros(pad, np.float32)]).reshape(nb, bs)
  return xs.astype(np.float32), ys.astype(np.int32), mask
