"""Shared plumbing of the experiment binaries: config -> data, labels, model; workdir; errors.

The binaries in experiments/ stay thin::

    from rl_align import eigenmap, experiment
    experiment.define_config_flags("experiments/configs/fig20.py:all")
    if __name__ == "__main__":
      experiment.launch(eigenmap.run_panels)

`run_main` writes the config next to the results, turns every `RLAlignError` into one clear line
on stderr (exit code 2, no traceback) and leaves everything already written in place.
"""
import json
import os
import sys
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from rl_align import errors
from rl_align import results
from rl_align import train


def check_workdir_config(config, workdir: str) -> None:
  """Writes config.json; refuses to resume a workdir that holds a different config."""
  new = json.loads(json.dumps(results._to_jsonable(config)))  # pylint: disable=protected-access
  old = results.read_json(workdir, "config.json")
  if old is not None and old != new:
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    raise errors.ConfigError(
        f"{workdir} already holds a run with a different config (fields {diff} differ). "
        "Fix: pass a new --workdir, or rerun with the same config to resume.")
  results.write_json(workdir, "config.json", new)


def run_main(fn: Callable[[Any, str], Any], config, workdir: str) -> Any:
  """Runs fn(config, workdir) as a binary: clear one-line errors, no traceback for user mistakes."""
  if not workdir:
    print("error: --workdir is required. Fix: pass --workdir=/path/to/run (rerun resumes there).",
          file=sys.stderr)
    sys.exit(2)
  train.init_distributed()
  try:
    os.makedirs(workdir, exist_ok=True)
    check_workdir_config(config, workdir)
    return fn(config, workdir)
  except errors.RLAlignError as e:
    print(f"error: {e}", file=sys.stderr)
    logging.flush()
    sys.exit(2)


def define_config_flags(example: str) -> None:
  """Defines the binaries' --config (a config file, e.g. `example`) and --workdir flags.

  They are registered under the running binary, so its --helpshort lists them.
  """
  config_flags.DEFINE_config_file("config", None, f"Config file, e.g. {example}")
  flags.DEFINE_string("workdir", None, "Output folder; rerunning on it resumes.")
  for name in ("config", "workdir"):
    flags.FLAGS.register_flag_by_module(sys.argv[0], flags.FLAGS[name])


def launch(fn: Callable[[Any, str], Any], summary: Callable[[Any], str] | None = None) -> None:
  """absl entry point of a config binary: run_main(fn, --config, --workdir), then print summary(out)."""
  def main(argv):
    del argv
    out = run_main(fn, flags.FLAGS.config, flags.FLAGS.workdir)
    if summary is not None:
      print(summary(out))
  flags.mark_flags_as_required(["config"])
  app.run(main)


def base_config() -> ml_collections.ConfigDict:
  """Fields every experiment config has."""
  c = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict({"name": "gaussian", "kwargs": {}, "data_dir": "",
                                      "standardize": False})
  c.labels = "random"
  c.num_classes = 10
  c.model = ml_collections.ConfigDict({"name": "dense", "widths": (2048, 256), "num_classes": 10})
  c.train = train.default_config()
  return c
