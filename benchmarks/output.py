"""How every benchmark hands back its results: the JSON on stdout, and atomically to --json."""

import json
import os


def emit(out: dict, path: str | None, echo: bool = True) -> None:
  """Prints `out` as indented JSON (unless echo=False) and, when `path` is set, writes it there
  atomically (`rl_align.results.write_json`: numpy-aware, a crash never leaves half a file)."""
  from rl_align import results  # pylint: disable=import-outside-toplevel

  if echo:
    print(json.dumps(results.to_jsonable(out), indent=1), flush=True)
  if path:
    results.write_json(os.path.dirname(os.path.abspath(path)), os.path.basename(path), out)
