r"""Writes a sweep's summary (sweep.json, sweep.csv, sweep_<field>.png) from its finished points.

  python -m experiments.sweep_summary WORKDIR

The last task of a sweep writes it too; this command is for when tasks were killed or to redo it.
Prints which points are still missing when the sweep is not finished (exit code 2).
"""

import os
import sys

from rl_align import errors
from rl_align import results
from rl_align import sweep


def main(argv) -> int:
  if len(argv) != 2:
    print("usage: python -m experiments.sweep_summary WORKDIR", file=sys.stderr)
    return 2
  workdir = argv[1]
  try:
    out = sweep.summarize(workdir)
  except errors.RLAlignError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if out is None:
    spec = results.read_json(workdir, sweep.SPEC)
    missing = [
      p["slug"]
      for p in spec["points"]
      if not sweep.is_done(workdir, sweep.Point(p["fields"], None, p["slug"]))
    ]
    print(
      f"error: {len(missing)} of {len(spec['points'])} points are not finished: "
      f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. Fix: rerun the sweep "
      "command (it resumes) for the tasks that own them.",
      file=sys.stderr,
    )
    return 2
  print(f"wrote {os.path.join(workdir, sweep.SUMMARY)} ({len(out['points'])} points)")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
