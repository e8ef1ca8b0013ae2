"""TensorBoard event files: one run per member, the metrics.jsonl curves and the eigenvalue map's f
snapshots, read back with a tiny TFRecord reader over tensorboardX's protobuf classes (the
`tensorboard` package is not a dependency)."""

import collections
import glob
import json
import os
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from experiments import cli
from experiments.configs import fig20
from rl_align import metric_writers
from rl_align import results
from rl_align import tensorboard
from rl_align import workdir
from rl_align.runners import eigenmap as eigenmap_runner


def read_events(run: str) -> list[event_pb2.Event]:
  """Every event of a run folder, files in name order (as TensorBoard reads them).  TFRecord:
  length (uint64 le), its crc (uint32), data, its crc (uint32)."""
  events = []
  for path in sorted(glob.glob(os.path.join(run, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (n,) = struct.unpack("<Q", data[pos : pos + 8])
      events.append(event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n]))
      pos += 12 + n + 4
    assert pos == len(data), path
  return events


def scalars(run: str) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of a run (the last value wins, as after a purge of a restart)."""
  out = collections.defaultdict(dict)
  for e in read_events(run):
    for v in e.summary.value:
      if v.WhichOneof("value") == "simple_value":
        out[v.tag][e.step] = v.simple_value
  return out


@pytest.fixture(scope="module")
def fig20_run(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("tb") / "fig20")
  cli.run_main(
    eigenmap_runner.run_panels,
    fig20.get_config("right,tiny"),
    wd,
    argv=["experiments/configs/fig20.py:right,tiny"],
  )  # every write is flushed
  return os.path.join(wd, "right")


@pytest.mark.slow
def test_one_run_per_member_with_the_metrics_jsonl_curves(fig20_run):
  rows = _rows(fig20_run)
  seeds = sorted({r["seed"] for r in rows})
  assert len(seeds) == 2
  root = os.path.join(fig20_run, "tensorboard", "train")
  assert sorted(os.listdir(root)) == [f"member_{s}" for s in seeds]
  for s in seeds:
    mine = [r for r in rows if r["seed"] == s]
    got = scalars(tensorboard.run_dir(fig20_run, "train", s))
    for key in ("loss", "batch_accuracy", "train_accuracy"):
      want = {r["step"]: r[key] for r in mine if key in r}
      assert want and sorted(got[key]) == sorted(want), key
      np.testing.assert_allclose(
        [got[key][t] for t in sorted(want)], [want[t] for t in sorted(want)], rtol=1e-6
      )


@pytest.mark.slow
def test_f_snapshots_are_the_runner_results(fig20_run):
  out = results.read_json(fig20_run, "results.json")
  arrays = results.read_npz(fig20_run, "arrays.npz")
  steps = [s["step"] for s in out["snapshots"]]
  assert len(steps) == 3 and out["step"] in steps
  d = arrays["f"].shape[1]
  for i, s in enumerate(sorted({r["seed"] for r in _rows(fig20_run)})):
    run = tensorboard.run_dir(fig20_run, "train", s)
    got = scalars(run)
    assert sorted(t for t in got if t.startswith("f/")) == [
      tensorboard.f_tag(j, d) for j in range(d)
    ]
    for step in steps:
      f = arrays[f"snapshot_{step}_f"][i]
      np.testing.assert_allclose(
        [got[tensorboard.f_tag(j, d)][step] for j in range(d)], f, rtol=1e-6
      )
    images = {
      e.step: v.image for e in read_events(run) for v in e.summary.value if v.tag == "f_of_sigma"
    }
    assert sorted(images) == tensorboard.image_steps(steps)
    assert min(steps) in images and max(steps) in images
    assert all(im.encoded_image_string.startswith(b"\x89PNG") for im in images.values())


def _rows(wd):
  return metric_writers.parse_jsonl(os.path.join(wd, "metrics.jsonl"))[0]


def test_resume_starts_a_session_and_other_processes_write_nothing(tmp_path, monkeypatch):
  wd = str(tmp_path)
  rows = lambda steps: [
    {"phase": "train", "step": t, "seed": 3, "loss": float(t), "epoch": t / 2, "note": "x"}
    for t in steps
  ]
  tensorboard.write_rows(wd, rows([2, 4, 6]))
  tensorboard.write_rows(wd, rows([4, 6, 8]))  # a resume from the checkpoint at step 2
  events = read_events(tensorboard.run_dir(wd, "train", 3))
  starts = [
    e.step
    for e in events
    if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START
  ]
  assert starts == [2, 4]
  assert set(scalars(tensorboard.run_dir(wd, "train", 3))) == {"loss", "epoch"}
  monkeypatch.setattr(workdir, "_process_index", lambda: 1)  # the workdir's writers elsewhere
  w = workdir.writer(str(tmp_path / "other"))
  assert isinstance(w, metric_writers.JsonlWriter) and not w.writes
  w.write_rows(rows([2]))
  assert not os.path.exists(tmp_path / "other")


def test_f_directions_are_capped_and_log_spaced():
  assert list(tensorboard.f_directions(5)) == [0, 1, 2, 3, 4]
  big = tensorboard.f_directions(3072)
  assert big[0] == 0 and big[-1] == 3071 and len(big) <= tensorboard.MAX_F_SCALARS


@pytest.mark.slow
def test_each_sweep_point_is_its_own_run(sweep_one_task):
  """A sweep through the binary (tests/conftest.py's `sweep_one_task`: 2 batch sizes x 2 (learning
  rate, seed) pairs, 1 epoch; 2 groups of 2 packed points) writes one run per point and member."""
  wd, _ = sweep_one_task
  runs = {
    os.path.relpath(os.path.dirname(p), wd)
    for p in glob.glob(str(wd / "**" / "events.out.tfevents.*"), recursive=True)
  }
  points = json.load(open(wd / "sweep.json"))["points"]
  want = {
    os.path.join(p["workdir"], "right", "tensorboard", "train", f"member_{r['seed']}")
    for p in points
    for r in _rows(str(wd / p["workdir"] / "right"))
  }
  assert len(points) == 4 and len(want) == 8 and runs == want


def test_image_steps_keep_the_ends_and_at_most_n():
  assert tensorboard.image_steps([5, 1, 3]) == [1, 3, 5]
  got = tensorboard.image_steps(list(range(0, 1000, 10)), n=5)
  assert len(got) == 5 and got[0] == 0 and got[-1] == 990 and got == sorted(set(got))
