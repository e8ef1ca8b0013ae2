"""How every benchmark hands back its results: the JSON on stdout, and atomically to --json; and
how an arm that runs in a fresh process is timed (`timed_process`)."""

import json
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed_process(cmd: list[str], what: str) -> tuple[float, list[float]]:
  """Runs `cmd` in the repository root; returns (wall seconds, [1-minute load average before,
  after]).  A failure is one SystemExit line naming `what`, with the end of its stderr."""
  load, t = [os.getloadavg()[0]], time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  wall = time.perf_counter() - t
  if proc.returncode != 0:
    raise SystemExit(f"error: {what} failed: {proc.stderr[-2000:]}")
  return wall, load + [os.getloadavg()[0]]


def emit(out: dict, path: str | None, echo: bool = True) -> None:
  """Prints `out` as indented JSON (unless echo=False) and, when `path` is set, writes it there
  atomically (`rl_align.results.write_json`: numpy-aware, a crash never leaves half a file)."""
  from rl_align import results  # pylint: disable=import-outside-toplevel

  if echo:
    print(json.dumps(results.to_jsonable(out), indent=1), flush=True)
  if path:
    results.write_json(os.path.dirname(os.path.abspath(path)), os.path.basename(path), out)
