"""config.data.placement: every binary's runner gives the same results with its training data on
the device (arrays) or streamed from the host (`rl_align.pipeline.HostFeed`), at tiny size.

Each case runs its runner twice on the same config, placement "device" then "host", and compares
results.json (and arrays.npz where the runner writes one) entry by entry.  Bitwise, as
tests/test_host_feed.py asserts of the engine: the host feed gives the very batches, labels and
floats of the device-resident data, so params, accuracies and everything computed from them are
equal; the input covariances are streamed in the same batches on both paths.  Only wall times and
the folder names differ, and each run's logged batch loss (a forward-only mean whose B terms the
two programs may sum in another order: tests/test_host_feed.py), which no results.json holds.
"""

import json
import os

import numpy as np
import pytest

from experiments.configs import fig2, fig3, fig4_cnn, fig5, fig20, specialization
from rl_align import data as data_lib
from rl_align import errors
from rl_align import inputs
from rl_align.runners import eigenmap as eigenmap_runner
from rl_align.runners import filters as filters_runner
from rl_align.runners import specialization as spec_runner
from rl_align.runners import transfer as transfer_runner


def _fig20():
  return fig20.get_config("right,tiny")


def _fig4():
  return fig4_cnn.get_config("random,real,tiny")


def _fig2():
  return fig2.get_config("random,real,tiny")


def _fig3():
  c = fig3.get_config("tiny")
  c.train.num_epochs = 1
  return c


def _specialization():
  c = specialization.get_config("tiny")
  c.sweep.widths = (8,)  # one (width, lr) cell
  c.highlight.wide_width = 8
  return c


def _fig5():
  return fig5.get_config("tiny")


# binary -> (its runner, the tiny config).  experiments.eigenvalue_map runs fig20 and fig4_cnn.
CASES = {
  "eigenvalue_map_fig20": (eigenmap_runner.run_panels, _fig20),
  "eigenvalue_map_fig4": (eigenmap_runner.run_panels, _fig4),
  "misalignment_fig2": (eigenmap_runner.run_misalignment, _fig2),
  "filters_fig3": (filters_runner.run, _fig3),
  "specialization": (spec_runner.run, _specialization),
  "transfer_fig5": (transfer_runner.run, _fig5),
}


def _comparable(obj, workdir: str):
  """results.json without wall times, the placement it names, and the run's folder in paths."""
  if isinstance(obj, dict):
    return {
      k: _comparable(v, workdir)
      for k, v in obj.items()
      if not k.endswith("runtime_s") and k != "placement"
    }
  if isinstance(obj, list):
    return [_comparable(v, workdir) for v in obj]
  if isinstance(obj, str):
    return obj.replace(workdir, "WORKDIR")
  return obj


def _outputs(workdir: str) -> dict:
  """{relative path: parsed results.json or {key: array} of arrays.npz} of every such file."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, workdir)
      if name == "results.json":
        with open(path, encoding="utf-8") as f:
          out[rel] = _comparable(json.load(f), workdir)
      elif name == "arrays.npz":
        with np.load(path) as z:
          out[rel] = {k: z[k] for k in z.files}
  return out


def _run(name: str, placement: str, workdir: str) -> dict:
  runner, make = CASES[name]
  c = make()
  c.data.placement = placement
  runner(c, workdir)
  return _outputs(workdir)


@pytest.mark.parametrize("name", list(CASES))
def test_host_fed_equals_device_resident(name, tmp_path, monkeypatch):
  device = _run(name, "device", str(tmp_path / "device"))

  def forbidden(*args, **kwargs):
    raise AssertionError(f"placement=host loaded a split as arrays: data.load{args}")

  monkeypatch.setattr(data_lib, "load", forbidden)
  host = _run(name, "host", str(tmp_path / "host"))
  assert sorted(host) == sorted(device) and any(k.endswith("results.json") for k in device)
  for path, want in device.items():
    if path.endswith(".npz"):
      assert sorted(host[path]) == sorted(want), path
      for k, v in want.items():
        np.testing.assert_array_equal(host[path][k], v, err_msg=f"{path}:{k}")
    else:
      assert host[path] == want, path
  if name == "transfer_fig5":  # the host path standardizes with statistics streamed over upstream
    stats = json.load(open(tmp_path / "host" / "phases" / "standardization.json"))
    assert stats["examples"] == _fig5().split.upstream and len(stats["mean"]) == 3


@pytest.mark.parametrize("bad", ["gpu", "Host", ""])
def test_a_wrong_placement_is_one_error_naming_the_allowed_values(bad):
  c = eigenmap_runner.panel_config(_fig20(), "right")
  c.data.placement = bad
  with pytest.raises(errors.ConfigError) as e:
    inputs.load(c)
  msg = str(e.value)
  assert "\n" not in msg and repr(bad) in msg and "config.data.placement" in msg
  for allowed in data_lib.PLACEMENTS:
    assert repr(allowed) in msg, msg
