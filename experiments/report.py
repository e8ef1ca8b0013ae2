r"""The claims table of the README, built from run workdirs (never typed by hand).

  python -m experiments.report WORKDIR [WORKDIR ...] [--out=report.md]

Reads each WORKDIR's results.json, config.json and run.json (and WORKDIR/<panel>/ of the
eigenvalue-map binaries), and writes --out: one row per claim of the paper the run's figure tests
(claim, the paper's value, ours with its seed interval, n, the regime gate, the verdict rule, the
verdict, a link to the figure PNG), then one line per run with its command, runtime and machine.
The figure a run serves is the key its runner wrote (results.json `claims.figure`); the rules are
`rl_align.claims`.  A verdict that differs from the one the runner stored (an older rule) is
warned about on stderr.  A sweep workdir (sweep_spec.json, points/<slug>/) gives one set of rows per
finished point.  Bad input (a missing workdir, no results.json, a figure the report does not know)
is one `error: ... Fix: ...` line on stderr and exit code 2.
"""

import argparse
import json
import os
import sys
from typing import Any

from rl_align import claims

SWEEP_SPEC = "sweep_spec.json"  # rl_align.sweep.SPEC (not imported: it pulls in jax)
# --readme: the report replaces what stands between these lines.
BEGIN, END = "<!-- fmnist-report:begin -->", "<!-- fmnist-report:end -->"


def fail(message: str) -> None:
  """Prints `error: message` (one line) on stderr and exits with code 2 (as experiments.cli)."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(2)


def _read(folder: str, name: str) -> Any:
  path = os.path.join(folder, name)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    fail(
      f"{path} could not be read ({e}). Fix: rerun the binary on that workdir (it rewrites "
      "its JSON files atomically)."
    )


def load_run(workdir: str, name: str) -> dict[str, Any]:
  """One run dict (`rl_align.claims`): results, config, run record and panel subfolders."""
  results = _read(workdir, "results.json")
  if results is None:
    fail(
      f"{workdir} has no results.json (unfinished run, or not a workdir of an experiment "
      "binary). Fix: finish the run (rerun its command; it resumes), then report again."
    )
  panels = {}
  for sub in sorted(os.listdir(workdir)):
    folder = os.path.join(workdir, sub)
    if os.path.isdir(folder) and os.path.exists(os.path.join(folder, "results.json")):
      panels[sub] = {
        "results": _read(folder, "results.json"),
        "config": _read(folder, "config.json"),
      }
  return {
    "name": name,
    "path": workdir,
    "results": results,
    "panels": panels,
    "config": _read(workdir, "config.json"),
    "run": _read(workdir, "run.json"),
  }


def load_workdir(workdir: str) -> list[dict[str, Any]]:
  """The runs of a workdir: itself, or every finished point of a sweep workdir."""
  if not os.path.isdir(workdir):
    fail(
      f"workdir {workdir} does not exist. Fix: pass the --workdir of a finished run of "
      "experiments.misalignment / eigenvalue_map / filters / transfer / specialization."
    )
  if not os.path.exists(os.path.join(workdir, SWEEP_SPEC)):
    return [load_run(workdir, workdir)]
  root = os.path.join(workdir, "points")
  slugs = sorted(os.listdir(root)) if os.path.isdir(root) else []
  done = [s for s in slugs if os.path.exists(os.path.join(root, s, "results.json"))]
  if not done:
    fail(
      f"sweep workdir {workdir} has no finished point (points/<slug>/results.json). Fix: rerun "
      "the sweep command (it resumes), then report again."
    )
  if len(done) < len(slugs):
    print(
      f"warning: {workdir}: {len(slugs) - len(done)} of {len(slugs)} sweep points are not "
      "finished and are left out",
      file=sys.stderr,
    )
  return [load_run(os.path.join(root, s), os.path.join(workdir, "points", s)) for s in done]


def build(workdirs: list[str], out: str) -> str:
  """report.md's text for the workdirs, plot links relative to the folder of `out`."""
  runs = [run for w in workdirs for run in load_workdir(w)]
  rows = []
  base = os.path.dirname(os.path.abspath(out))
  for run in runs:
    try:
      got = claims.rows(run)
    except claims.ReportError as e:
      fail(e)
    stored = (run["results"].get("claims") or {}).get("verdicts") or {}
    for r in got:
      png = os.path.join(run["path"], r.plot) if r.plot else None
      found = png is not None and os.path.exists(png)
      r.plot = os.path.relpath(os.path.abspath(png), base) if found else None
      r.run = run["name"]
      if r.id in stored and stored[r.id] != r.verdict:
        print(
          f"warning: {run['name']}: {r.id}: the run stored the verdict {stored[r.id]!r}, the "
          f"rules now give {r.verdict!r} (results.json was judged by an older rule)",
          file=sys.stderr,
        )
      rows.append(r)
  return claims.render(runs, rows)


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line, exit 2
    fail(f"{message}. Fix: python -m experiments.report WORKDIR [WORKDIR ...] [--out=report.md]")


def main(argv=None) -> int:
  p = _Parser(prog="python -m experiments.report", description=__doc__.split("\n\n")[0])
  p.add_argument("workdirs", nargs="+", metavar="WORKDIR")
  p.add_argument("--out", default="report.md", help="the markdown file to write")
  p.add_argument(
    "--readme",
    default="",
    help=f"also put the report between the lines {BEGIN} and {END} of this file",
  )
  a = p.parse_args(argv)
  _write(a.out, build(a.workdirs, a.out))
  print(f"wrote {a.out}")
  if a.readme:
    _write(a.readme, into_markers(a.readme, build(a.workdirs, a.readme)))
    print(f"updated {a.readme}")
  return 0


def into_markers(path: str, text: str) -> str:
  """The file at `path` with `text` between its BEGIN and END marker lines."""
  if not os.path.exists(path):
    fail(f"--readme {path} does not exist. Fix: pass the README with the {BEGIN} / {END} lines.")
  with open(path, encoding="utf-8") as f:
    old = f.read()
  if old.count(BEGIN) != 1 or old.count(END) != 1 or old.index(BEGIN) > old.index(END):
    fail(
      f"{path} must hold the line {BEGIN} once, followed by {END} once. Fix: add them where the "
      "report goes."
    )
  head, rest = old.split(BEGIN)
  # The report's headings sit two levels below the README section that holds it.
  text = "\n".join(
    "##" + line if line.startswith("#") else line for line in text.strip().split("\n")
  )
  return f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}"


def _write(path: str, text: str) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


if __name__ == "__main__":
  sys.exit(main())
