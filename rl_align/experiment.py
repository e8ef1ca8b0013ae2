"""The workdir's config check, shared by the binaries (experiments/cli.py) and the runners.

    from rl_align import experiment
    experiment.check_workdir_config(config, workdir)   # writes workdir/config.json, or refuses

The CLI plumbing (flags, launch, run_main) lives in experiments/cli.py and base_config in
experiments/configs/common.py; this function moves to the runners' common module next.
"""
import json

from rl_align import errors
from rl_align import results


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
