"""Sweeps: many points of one experiment config, packed into few engine programs, split over jobs.

Every experiment binary takes ``--sweep=FIELD=V1,V2,...`` (repeatable: the product is swept) and
``--sweep_zip=FIELD=V1,V2;FIELD2=W1,W2`` (fields that vary together), e.g.::

    python -m experiments.eigenvalue_map --config=experiments/configs/fig20.py:right \
        --sweep=train.learning_rate=0.01,0.02,0.05 --sweep=train.seed=0,1 --workdir=workdirs/lr

Layout of WORKDIR: ``sweep_spec.json`` (what is swept; a second, different sweep is refused),
``points/<slug>/`` (each point's full run with the binary's usual outputs, plus ``point.json`` once
it finished), ``packed/<group slug>/`` (orbax state of each group's packed programs),
``sweep.json``, ``sweep.csv`` and one ``sweep_<field>.png`` per swept field (every headline scalar
against it).

Points that differ only in `PACKABLE` fields (learning rate, momentum, weight decay, init scales,
root and label seeds, seed counts) form one *group*: their runners advance in lockstep and their
engine calls are packed into one program (`rl_align.packing.run_groups`, which imports this
module; this one does not import packing).  Groups are the unit of
``--task_index/--num_tasks`` splitting (SLURM job arrays: ``SLURM_ARRAY_TASK_ID`` /
``SLURM_ARRAY_TASK_COUNT``).  Whichever task finishes the last point writes the summary; so does
``python -m experiments.sweep_summary WORKDIR``.

Library use::

    axes = sweep.parse_axes(["train.learning_rate=0.01,0.02"], [])
    points = sweep.expand(config, axes)            # [Point(fields, config, slug)]
    groups = sweep.group_points(points, packing=True)
"""

import ast
import csv
import dataclasses
import io
import itertools
import json
import os
import time
from typing import Any, Mapping, Sequence

from absl import logging
import ml_collections
import numpy as np

from rl_align import errors
from rl_align import results
from rl_align.engine import grouping

# THE packable fields (last component of a dotted config path): points, and engine calls
# (`rl_align.engine.grouping.compatible`), that differ only in these share one engine program.  They change
# neither shapes nor the program: per-member optimizer scalars (`seeds.MEMBER_HPARAMS`), who the
# members are (root seed, seed ids, label draw) and the model's init-only fields.
PACKABLE = grouping.PACKABLE
SPEC, SUMMARY, CSV, POINT_DONE, LOCK = (
  "sweep_spec.json",
  "sweep.json",
  "sweep.csv",
  "point.json",
  "sweep_summary.lock",
)
# Headline scalars: results.json keys containing one of these, per seed (mean and std) or scalar.
HEADLINE_WORDS = (
  "accuracy",
  "misalignment",
  "rmse",
  "gain",
  "speedup",
  "overlap",
  "plateau",
  "peak",
  "diverged",
)


@dataclasses.dataclass
class Point:
  fields: dict[str, Any]
  config: ml_collections.ConfigDict
  slug: str


def _literal(field: str, text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if text.replace("_", "").isalnum():  # a bare word: a string value
      return text
    raise errors.ConfigError(
      f"--sweep {field}: {text!r} is not a Python literal. Fix: e.g. "
      f"{field}=0.01,0.02 or {field}='a','b'."
    ) from None


def _split_values(field: str, text: str) -> list[Any]:
  """'0.01,0.02' -> [0.01, 0.02]; '(1,2),(3,4)' -> [(1,2),(3,4)] (commas inside brackets stay)."""
  try:
    value = ast.literal_eval(f"[{text}]")
    return list(value)
  except (ValueError, SyntaxError):
    return [_literal(field, v) for v in text.split(",") if v.strip()]


def _axis(text: str) -> tuple[str, list[Any]]:
  field, sep, values = text.partition("=")
  field = field.strip()
  if not sep or not field:
    raise errors.ConfigError(
      f"--sweep {text!r} must be FIELD=V1,V2,... Fix: e.g. --sweep=train.learning_rate=0.01,0.02."
    )
  vals = _split_values(field, values.strip())
  if not vals:
    raise errors.ConfigError(
      f"--sweep {field}: the list of values is empty. Fix: give at least one, "
      f"e.g. {field}=0.01,0.02."
    )
  return field, vals


def parse_axes(sweep: Sequence[str], sweep_zip: Sequence[str]) -> list[list[tuple[str, list[Any]]]]:
  """Flag values -> axes; an axis is a list of (field, values) that vary together."""
  axes = [[_axis(s)] for s in sweep]
  for z in sweep_zip:
    axis = [_axis(part) for part in z.split(";") if part.strip()]
    lengths = {f: len(v) for f, v in axis}
    if len(set(lengths.values())) > 1:
      raise errors.ConfigError(
        f"--sweep_zip {z!r}: the fields vary together, so they need the same "
        f"number of values; got {lengths}."
      )
    axes.append(axis)
  seen = [f for axis in axes for f, _ in axis]
  dup = sorted({f for f in seen if seen.count(f) > 1})
  if dup:
    raise errors.ConfigError(f"--sweep: fields {dup} are swept twice. Fix: name each field once.")
  return axes


def _get(config, field: str):
  node = config
  for part in field.split("."):
    if isinstance(node, (ml_collections.ConfigDict, dict)) and part in node:
      node = node[part]
    else:
      return KeyError
  return node


def _check_type(field: str, old: Any, new: Any) -> Any:
  if old is None or isinstance(new, type(old)):
    return new
  if isinstance(old, float) and isinstance(new, int) and not isinstance(new, bool):
    return float(new)
  if isinstance(old, (tuple, list)) and isinstance(new, (tuple, list)):
    return type(old)(new)
  raise errors.ConfigError(
    f"--sweep {field}: value {new!r} is a {type(new).__name__} but the "
    f"config's field is a {type(old).__name__} ({old!r}). Fix: give values "
    f"of type {type(old).__name__}."
  )


def _slug_value(v: Any) -> str:
  s = repr(v) if not isinstance(v, str) else v
  return "".join(c if c.isalnum() or c in "._-+" else "_" for c in s)


def slug(fields: Mapping[str, Any]) -> str:
  return ",".join(f"{k}={_slug_value(v)}" for k, v in fields.items())


def expand(config: ml_collections.ConfigDict, axes) -> list[Point]:
  """The product of the axes as points; every field must exist in the config with a matching type."""
  for axis in axes:
    for field, values in axis:
      old = _get(config, field)
      if old is KeyError:
        top = (
          sorted(config.keys())
          if "." not in field
          else sorted(
            _get(config, field.rsplit(".", 1)[0]).keys()
            if isinstance(_get(config, field.rsplit(".", 1)[0]), (ml_collections.ConfigDict, dict))
            else []
          )
        )
        raise errors.ConfigError(
          f"--sweep: the config has no field {field!r}. Fix: sweep an existing "
          f"field (at that level: {', '.join(map(str, top))})."
        )
      for v in values:
        _check_type(field, old, v)
  points = []
  for combo in itertools.product(*[list(zip(*[vals for _, vals in axis])) for axis in axes]):
    fields = {}
    for axis, vals in zip(axes, combo):
      fields.update({f: v for (f, _), v in zip(axis, vals)})
    cfg = ml_collections.ConfigDict(config.to_dict())
    for f, v in fields.items():
      parent, _, last = f.rpartition(".")
      node = _get(cfg, parent) if parent else cfg
      node[last] = _check_type(f, node[last], v)
    points.append(Point(fields=fields, config=cfg, slug=slug(fields)))
  slugs = [p.slug for p in points]
  if len(set(slugs)) != len(slugs):
    raise errors.ConfigError(
      "--sweep: two points get the same folder name (repeated values?). Fix: list every value once."
    )
  return points


def packable(field: str) -> bool:
  parts = field.split(".")
  return parts[-1] in PACKABLE and parts[0] != "data"


def group_points(points: Sequence[Point], packing: bool = True) -> list[list[int]]:
  """Indices of points that run as one packed group (each point alone when packing is off)."""
  if not packing:
    return [[i] for i in range(len(points))]
  groups: dict[str, list[int]] = {}
  for i, p in enumerate(points):
    key = json.dumps({f: repr(v) for f, v in p.fields.items() if not packable(f)}, sort_keys=True)
    groups.setdefault(key, []).append(i)
  return list(groups.values())


def task_share(n_groups: int, task_index: int, num_tasks: int) -> list[int]:
  """The groups task `task_index` of `num_tasks` runs: g with g % num_tasks == task_index."""
  if num_tasks < 1 or not 0 <= task_index < num_tasks:
    raise errors.ConfigError(
      f"--task_index={task_index} must be in [0, --num_tasks={num_tasks}). "
      "Fix: number the tasks 0 .. N-1 (a SLURM array --array=0-(N-1))."
    )
  return [g for g in range(n_groups) if g % num_tasks == task_index]


def write_spec(workdir: str, spec: Mapping[str, Any], is_main: bool) -> None:
  """Records what WORKDIR sweeps; refuses a workdir that holds another sweep or a plain run."""
  spec = json.loads(json.dumps(results.to_jsonable(spec)))
  old = results.read_json(workdir, SPEC)
  if old is not None and old != spec:
    diff = sorted(k for k in set(old) | set(spec) if old.get(k) != spec.get(k))
    raise errors.ConfigError(
      f"{workdir} holds another sweep ({diff} differ). Fix: pass a new "
      "--workdir, or rerun the same sweep command to resume it."
    )
  if old is None and os.path.exists(os.path.join(workdir, "config.json")):
    raise errors.ConfigError(
      f"{workdir} holds a single run (config.json), not a sweep. Fix: pass a "
      "new --workdir for the sweep."
    )
  if old is None and is_main:
    os.makedirs(workdir, exist_ok=True)
    results.write_json(workdir, SPEC, spec)


def point_dir(workdir: str, p: Point) -> str:
  return os.path.join(workdir, "points", p.slug)


def is_done(workdir: str, p: Point) -> bool:
  return (results.read_json(point_dir(workdir, p), POINT_DONE) or {}).get("status") == "done"


def mark_done(workdir: str, p: Point, wall_s: float) -> None:
  results.write_json(
    point_dir(workdir, p),
    POINT_DONE,
    {"fields": p.fields, "status": "done", "wall_s": round(wall_s, 2)},
  )


def group_slug(points: Sequence[Point], g: Sequence[int]) -> str:
  """The folder name of a group: the swept fields its points share that do not pack ("all")."""
  return slug({f: v for f, v in points[g[0]].fields.items() if not packable(f)}) or "all"


# ----------------------------------------------------------------------------------------------
# Summary.


def _seed_counts(config: Mapping[str, Any]) -> set[int]:
  out = set()

  def walk(node):
    if isinstance(node, dict):
      for k, v in node.items():
        if k == "num_seeds" and isinstance(v, int):
          out.add(v)
        walk(v)

  walk(config)
  return out


def headline(res: Any, seeds: set[int], prefix: str = "") -> dict[str, dict[str, float]]:
  """Headline scalars of a results.json: per-seed lists (and the last column of seeds x steps
  curves) of keys naming accuracy, misalignment, ... as {mean, std}; such numeric scalars as
  {mean, std: None}."""
  out = {}
  if isinstance(res, dict):
    for k, v in res.items():
      if k in ("snapshots", "config", "early_time"):
        continue
      name = f"{prefix}{k}"
      if any(w in k for w in HEADLINE_WORDS) and not isinstance(v, dict):
        arr = np.asarray(v, dtype=object)
        try:
          arr = np.asarray(v, np.float64)
        except (TypeError, ValueError):
          continue
        if arr.ndim == 0:
          out[name] = {"mean": float(arr), "std": None}
        elif arr.ndim in (1, 2) and arr.shape[0] in seeds:
          vals = arr if arr.ndim == 1 else arr[:, -1]
          out[name if arr.ndim == 1 else f"{name}/final"] = {
            "mean": float(np.nanmean(vals)),
            "std": float(np.nanstd(vals)),
          }
      elif isinstance(v, dict) and prefix.count("/") < 3:
        out.update(headline(v, seeds, f"{name}/"))
  return out


def point_summary(pdir: str) -> dict[str, dict[str, float]]:
  """Headline scalars of one finished point: its results.json and those of its sub-runs (panels)."""
  seeds = _seed_counts(results.read_json(pdir, "config.json") or {})
  out = headline(results.read_json(pdir, "results.json") or {}, seeds)
  for sub in sorted(os.listdir(pdir)) if os.path.isdir(pdir) else []:
    if os.path.isfile(os.path.join(pdir, sub, "results.json")):
      out.update(
        headline(results.read_json(os.path.join(pdir, sub), "results.json"), seeds, f"{sub}/")
      )
  return out


def summarize(workdir: str) -> dict[str, Any] | None:
  """sweep.json / sweep.csv / sweep_<field>.png when every point is done; None otherwise."""
  spec = results.read_json(workdir, SPEC)
  if spec is None:
    raise errors.ConfigError(
      f"{workdir} holds no sweep ({SPEC} is missing). Fix: pass the --workdir of a sweep."
    )
  rows = []
  for entry in spec["points"]:
    pdir = os.path.join(workdir, "points", entry["slug"])
    if (results.read_json(pdir, POINT_DONE) or {}).get("status") != "done":
      return None
    rows.append(
      {
        "fields": entry["fields"],
        "workdir": os.path.relpath(pdir, workdir),
        "summary": point_summary(pdir),
      }
    )
  out = {"binary": spec.get("binary"), "swept": spec["fields"], "points": rows}
  results.write_json(workdir, SUMMARY, out)
  _write_csv(workdir, rows)
  from rl_align.plots import sweep as sweep_plots  # pylint: disable=g-import-not-at-top

  for field in spec["fields"]:
    sweep_plots.plot_field(rows, field, os.path.join(workdir, f"sweep_{_slug_value(field)}.png"))
  return out


def _write_csv(workdir: str, rows: Sequence[Mapping[str, Any]]) -> None:
  fields = list(rows[0]["fields"]) if rows else []
  names = sorted({k for r in rows for k in r["summary"]})
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(fields + [f"{n}/{s}" for n in names for s in ("mean", "std")] + ["workdir"])
  for r in rows:
    vals = [r["summary"].get(n, {}) for n in names]
    w.writerow(
      [r["fields"][f] for f in fields]
      + [x for v in vals for x in (v.get("mean", ""), v.get("std", ""))]
      + [r["workdir"]]
    )
  results.write_text(workdir, CSV, buf.getvalue())


def try_summarize(workdir: str) -> dict[str, Any] | None:
  """Writes the summary if every point is done and no other task is writing it (lock file)."""
  lock = os.path.join(workdir, LOCK)
  try:
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
  except FileExistsError:
    if time.time() - os.path.getmtime(lock) < 600:
      logging.info("sweep: another task is writing the summary (%s).", lock)
      return None
    os.remove(lock)  # stale: its writer died
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
  try:
    return summarize(workdir)
  finally:
    os.close(fd)
    os.remove(lock)
