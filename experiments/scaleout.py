"""Flags that change how a binary runs, not what it computes: several hosts and sweeps.

Every experiment binary gets them through `experiments.cli.launch`:

- ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` (defaults:
  ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``; none set: single process,
  unless JAX's cluster detection applies): `rl_align.distributed.initialize` before any device use.
- ``--sweep=FIELD=V1,V2`` (repeatable), ``--sweep_zip=F=V1,V2;G=W1,W2``, ``--sweep_packing=on|off``,
  ``--task_index=I --num_tasks=N`` (defaults: the SLURM job array's task id and count): a sweep
  (`rl_align.sweep`) instead of one run.
"""

import os
import time
from typing import Any, Callable

from absl import flags
from absl import logging
import jax

from rl_align import distributed
from rl_align import errors
from rl_align import packing
from rl_align import sweep as sweep_lib

FLAGS = flags.FLAGS


def _env_int(*names: str, default: int) -> int:
  for n in names:
    v = os.environ.get(n, "")
    if v.lstrip("-").isdigit():
      return int(v)
  return default


def _slurm_task_index() -> int:
  return _env_int("SLURM_ARRAY_TASK_ID", default=0) - _env_int("SLURM_ARRAY_TASK_MIN", default=0)


def define_flags() -> None:
  """Registers the scale-out flags (once per process)."""
  if "sweep" in FLAGS:
    return
  flags.DEFINE_string(
    "coordinator_address",
    os.environ.get("JAX_COORDINATOR_ADDRESS"),
    "HOST:PORT of process 0 for a multi-process run (env JAX_COORDINATOR_ADDRESS).",
  )
  flags.DEFINE_integer(
    "num_processes",
    _env_int("JAX_NUM_PROCESSES", default=0) or None,
    "Processes of a multi-process run (env JAX_NUM_PROCESSES).",
  )
  flags.DEFINE_integer(
    "process_id",
    _env_int("JAX_PROCESS_ID", default=-1) if os.environ.get("JAX_PROCESS_ID") else None,
    "This process's index in [0, num_processes) (env JAX_PROCESS_ID).",
  )
  flags.DEFINE_multi_string(
    "sweep",
    [],
    "FIELD=V1,V2,... (Python literals); repeat the flag to "
    "sweep the product, e.g. --sweep=train.learning_rate=0.01,0.02.",
  )
  flags.DEFINE_multi_string("sweep_zip", [], "F=V1,V2;G=W1,W2: fields that vary together.")
  flags.DEFINE_enum(
    "sweep_packing",
    "on",
    ["on", "off"],
    "Pack points that differ only in "
    "learning rate, momentum, weight decay, init scales, root / label seeds into "
    "one engine program (on), or run every point alone (off).",
  )
  flags.DEFINE_integer(
    "task_index",
    _slurm_task_index(),
    "This task's share of the sweep's point "
    "groups (default: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN).",
  )
  flags.DEFINE_integer(
    "num_tasks",
    _env_int("SLURM_ARRAY_TASK_COUNT", default=1),
    "Tasks the sweep is split over (default: SLURM_ARRAY_TASK_COUNT, else 1).",
  )


def _flag(name: str, default: Any = None) -> Any:
  """The flag's value; its default when the flags are not defined or parsed (library callers)."""
  return FLAGS[name].value if name in FLAGS else default


def init_processes() -> None:
  """jax.distributed from the flags (or the environment); before anything touches a device."""
  distributed.initialize(_flag("coordinator_address"), _flag("num_processes"), _flag("process_id"))


def is_sweep() -> bool:
  """Whether the flags ask for a sweep; --task_index / --num_tasks given without one is an error
  (they split a sweep's points: alone they would silently run everything)."""
  sweep = bool(_flag("sweep") or _flag("sweep_zip"))
  given = [n for n in ("task_index", "num_tasks") if n in FLAGS and FLAGS[n].present]
  if given and not sweep:
    raise errors.ConfigError(
      f"--{given[0]} splits a sweep's points over tasks, but no --sweep / --sweep_zip is given. "
      f"Fix: add the sweep (e.g. --sweep=train.learning_rate=0.01,0.02), or drop --{given[0]}."
    )
  return sweep


def _binary() -> str:
  import sys  # pylint: disable=g-import-not-at-top

  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  return spec.name if spec is not None else os.path.basename(sys.argv[0])


def run_sweep(run_point: Callable[[Any, str], Any], config, workdir: str) -> dict[str, Any]:
  """Validates the whole sweep (before anything compiles), runs this task's share, summarizes.

  run_point(config, point_workdir) is one point's run as the binary would make it (config.json,
  run.json), as a generator of its train calls (`cli.recorded_steps`): a group's points advance in
  lockstep and their calls are packed (`rl_align.packing`).
  """
  sweeps, zips = list(_flag("sweep", [])), list(_flag("sweep_zip", []))
  task_index, num_tasks = _flag("task_index", 0), _flag("num_tasks", 1)
  packing_on = _flag("sweep_packing", "on") == "on"
  axes = sweep_lib.parse_axes(sweeps, zips)
  points = sweep_lib.expand(config, axes)
  groups = sweep_lib.group_points(points, packing=packing_on)
  share = sweep_lib.task_share(len(groups), task_index, num_tasks)
  spec = {
    "binary": _binary(),
    "base_config": config,
    "sweep": sweeps,
    "sweep_zip": zips,
    "fields": [f for ax in axes for f, _ in ax],
    "points": [{"slug": p.slug, "fields": p.fields} for p in points],
  }
  is_main = jax.process_index() == 0
  sweep_lib.write_spec(workdir, spec, is_main)
  mine = [groups[g] for g in share]
  logging.info(
    "sweep: %d points in %d groups (packing %s); task %d/%d runs %d group(s), %d point(s)",
    len(points),
    len(groups),
    "on" if packing_on else "off",
    task_index,
    num_tasks,
    len(mine),
    sum(len(g) for g in mine),
  )
  t0 = time.time()
  failures = packing.run_groups(lambda p, d: run_point(p.config, d), points, mine, workdir, is_main)
  out = {
    "points": len(points),
    "groups": len(groups),
    "task_groups": len(mine),
    "wall_s": time.time() - t0,
    "failures": failures,
    "summary": None,
  }
  if failures:
    raise errors.ConfigError(
      f"{len(failures)} sweep point(s) failed (the others are kept; a rerun "
      f"retries them): " + " | ".join(failures)
    )
  if is_main:
    out["summary"] = sweep_lib.try_summarize(workdir)
  return out


def sweep_table(out: dict[str, Any]) -> str:
  """One line per point: its fields and its first headline scalars (for the binary's stdout)."""
  summ = out.get("summary")
  if not summ:
    return (
      f"sweep: this task ran {out['task_groups']} of {out['groups']} group(s) in "
      f"{out['wall_s']:.0f} s; the summary is written when every point is done."
    )
  lines = []
  for row in summ["points"]:
    cells = list(row["summary"].items())[:4]
    shown = "  ".join(
      f"{k} {v['mean']:.4g}" + (f"±{v['std']:.2g}" if v["std"] else "") for k, v in cells
    )
    lines.append(f"{sweep_lib.slug(row['fields'])}  {shown}")
  return "\n".join(lines)
