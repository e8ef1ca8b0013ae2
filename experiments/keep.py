r"""Keeps the small files of a finished run (what the claims report reads) in the repository.

  python -m experiments.keep WORKDIR docs/fmnist_runs/NAME

Copies every results.json, config.json, run.json, point.json, sweep*.json / .csv and PNG of
WORKDIR (its panels and sweep points included) to the destination, and nothing else (no
checkpoints, snapshots, metrics or TensorBoard files).  In every run.json the command's
`--workdir=...` becomes `--workdir=workdirs/NAME` (and `cwd` is dropped), so the kept record shows
the command a reader would type.  `python -m experiments.report docs/fmnist_runs/*` then builds the
claims table from the kept runs.  Bad input is one `error: ... Fix: ...` line and exit code 2.
"""

import argparse
import json
import os
import shutil
import sys

KEEP_NAMES = (
  "results.json",
  "config.json",
  "run.json",
  "point.json",
  "sweep.json",
  "sweep_spec.json",
  "sweep.csv",
)
SKIP_DIRS = ("tensorboard", "packed", "phases", "checkpoints")


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _kept(name: str) -> bool:
  return name in KEEP_NAMES or name.endswith(".png")


def _skipped(folder: str) -> bool:
  return folder in SKIP_DIRS or folder.endswith(("_state", "_snapshots"))


def rewrite_run(rec: dict, name: str) -> dict:
  """run.json with --workdir=... (the invocation's and the earlier ones') as workdirs/NAME."""

  def argv(a):
    return [f"--workdir=workdirs/{name}" if str(x).startswith("--workdir=") else x for x in a]

  out = {k: v for k, v in rec.items() if k != "cwd"}
  out["argv"] = argv(rec.get("argv", []))
  out["earlier_runs"] = [
    dict({k: v for k, v in r.items() if k != "cwd"}, argv=argv(r.get("argv", [])))
    for r in rec.get("earlier_runs", [])
  ]
  return out


def keep(workdir: str, dest: str) -> list[str]:
  """Copies the kept files of workdir to dest (module docstring); returns their relative paths."""
  if not os.path.isfile(os.path.join(workdir, "results.json")) and not os.path.isfile(
    os.path.join(workdir, "sweep_spec.json")
  ):
    fail(
      f"{workdir} holds no finished run (no results.json or sweep_spec.json). Fix: pass the "
      "--workdir of a finished run."
    )
  name = os.path.basename(os.path.normpath(dest))
  copied = []
  for root, dirs, files in os.walk(workdir):
    dirs[:] = sorted(d for d in dirs if not _skipped(d))
    for f in sorted(files):
      if not _kept(f):
        continue
      rel = os.path.relpath(os.path.join(root, f), workdir)
      target = os.path.join(dest, rel)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      if f == "run.json":
        with open(os.path.join(root, f), encoding="utf-8") as fh:
          rec = rewrite_run(json.load(fh), name)
        with open(target, "w", encoding="utf-8") as fh:
          json.dump(rec, fh, indent=1)
          fh.write("\n")
      else:
        shutil.copyfile(os.path.join(root, f), target)
      copied.append(rel)
  return copied


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m experiments.keep", description=__doc__.split("\n\n")[0]
  )
  p.add_argument("workdir")
  p.add_argument("dest")
  a = p.parse_args(argv)
  copied = keep(a.workdir, a.dest)
  print(f"kept {len(copied)} files of {a.workdir} in {a.dest}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
