"""Tests of the ImageNet pieces: streaming tfds sources (under tfds mock data), data placement, the
experiments/configs/imagenet.py config, and its data path through the host pipeline.

    pytest -q tests/test_imagenet.py

Comparisons are exact: the streaming path and the in-memory path run the same elementwise ops.
"""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments.configs import imagenet
from rl_align import data
from rl_align import errors
from rl_align import inputs
from rl_align import pipeline
from rl_align import seeds
from rl_align import train
from rl_align.runners import transfer as transfer_runner

N_MOCK = 64


@pytest.fixture
def mock():
  with tfds.testing.mock_data(num_examples=N_MOCK):
    yield


def test_imagenet_resized_source_streams_the_rows_load_gives(mock):
  src = data.source("imagenet", split="train", image_size=32)
  assert len(src) == N_MOCK and src.example_shape == (32, 32, 3) and src.dtype == np.uint8
  assert src.num_classes == 1000 and src.decodes
  ds = data.load("imagenet", split="train", image_size=32)
  idx = np.array([5, 0, 63, 5, 17])
  x, y = src.take(idx)
  assert x.dtype == np.uint8 and y.dtype == np.int32
  np.testing.assert_array_equal(data.to_unit_float(x), ds.x[idx])
  np.testing.assert_array_equal(y, ds.y[idx])
  view = src.subset(np.array([9, 3, 40]))
  np.testing.assert_array_equal(view.take([2, 0])[0], src.take([40, 9])[0])
  for a, b in zip(data.channel_stats(view), data.channel_stats(ds.x[[9, 3, 40]])):
    np.testing.assert_array_equal(a, b)  # streamed statistics: the same chunks, the same bits
  assert len(data.source("imagenet", split="validation", image_size=64)) == N_MOCK


def test_imagenet2012_source_resizes_each_image_at_any_size(mock):
  src = data.source("imagenet2012", split="train", image_size=12)
  assert src.example_shape == (12, 12, 3) and src.dtype == np.uint8
  raw = tfds.data_source("imagenet2012", split="train")
  im = np.asarray(raw[4]["image"])
  assert im.shape[0] != im.shape[1]  # mock images have random, non-square sizes
  x, _ = src.take([4])
  np.testing.assert_array_equal(x[0], data.square_resize(im, 12))
  flat = np.full((6, 10, 3), 7, np.uint8)  # a constant image stays constant under an area resize
  assert (data.square_resize(flat, 4) == 7).all()
  ds = data.load("imagenet2012", split="train", image_size=12, max_examples=10)
  np.testing.assert_array_equal(ds.x, data.to_unit_float(src.take(np.arange(10))[0]))
  with pytest.raises(errors.ConfigError, match="varying size"):
    data.TfdsSource("imagenet2012", "train")
  with pytest.raises(errors.ConfigError, match="8, 16, 32, 64"):
    data.source("imagenet", image_size=24)


def test_missing_imagenet_is_one_clear_error(tmp_path):
  with pytest.raises(errors.DatasetNotFoundError) as info:
    data.source("imagenet", split="train", image_size=64, data_dir=str(tmp_path))
  msg = str(info.value)
  assert "'imagenet_resized/64x64'" in msg and str(tmp_path) in msg
  assert "tfds build imagenet_resized/64x64" in msg and "array_record" in msg
  with pytest.raises(errors.DatasetNotFoundError) as info:
    data.source("imagenet2012", split="train", image_size=64, data_dir=str(tmp_path))
  msg = str(info.value)
  assert "--manual_dir" in msg and "ILSVRC2012_img_train.tar" in msg and str(tmp_path) in msg
  assert not list(tmp_path.iterdir())  # nothing downloaded or created


def test_choose_placement_and_its_log_line():
  gib = 2**30
  # the local photos: 6000 x 16x16x3 float32 = 18 MB
  where, line = data.choose_placement(6000, (16, 16, 3), 16, 2 * gib)
  assert where == "device" and "auto -> device" in line
  # half of ImageNet at 64x64: 640,583 x 12,288 x 4 B = 29.32 GiB, + 2 x 640,583 int32 labels
  half = imagenet.IMAGENET_TRAIN // 2
  for device_gib, want in ((16, "host"), (80, "host"), (139, "device")):
    where, line = data.choose_placement(half, (64, 64, 3), 2, device_gib * gib)
    assert where == want, (device_gib, line)
    assert "29.33 GiB" in line and f"{device_gib:.1f} GiB" in line
  assert data.choose_placement(half, (64, 64, 3), 2, 139 * gib, "host")[0] == "host"
  with pytest.raises(errors.ConfigError, match="placement=host"):
    data.choose_placement(half, (64, 64, 3), 2, 16 * gib, "device")
  with pytest.raises(errors.ConfigError, match="'auto', 'device', 'host'"):
    data.choose_placement(10, (2,), 1, gib, "gpu")
  assert data.device_memory_bytes() > 0


@pytest.mark.parametrize(
  "arg",
  ["vgg16", "resnet18,res=32", "vgg16,imagenet2012,res=96", "resnet18,local", "vgg16,tiny,res=32"],
)
def test_configs_build(arg):
  c = imagenet.get_config(arg)
  assert c.data.placement == "host" and tuple(c.arms) == imagenet.ARMS
  assert c.transfer_layers == 0 and c.downstream.labels == "real"
  if "local" in arg:
    assert c.data.name == "photos" and c.model.name == "resnet18" and c.model.width == 8
    return
  assert c.data.test_split == "validation" and c.upstream.num_classes == 1000
  assert c.model.num_classes == 1000 and c.model.name == arg.split(",")[0]
  assert c.data.name == ("imagenet2012" if "imagenet2012" in arg else "imagenet")
  if "tiny" not in arg:  # two halves of the train split
    assert c.split.upstream + c.split.downstream == imagenet.IMAGENET_TRAIN
    assert abs(c.split.upstream - c.split.downstream) <= 1


def test_config_errors_and_runtime_estimate():
  for bad, match in (
    ("vgg16,res=48", "res=32 or res=64"),
    ("resnet18,imagenet2012,res=16", ">= 32"),
    ("vgg16,local", "ResNet18 only"),
    ("vgg16,rs=64", "did you mean 'res'"),
  ):
    with pytest.raises(errors.ConfigError, match=match):
      imagenet.get_config(bad)
  # the docstring's table: 2 seeds x (1 + 3 arms) x 10 epochs of 5004 steps at 100 TFLOP/s
  for arg, hours in (
    ("vgg16,res=32", 0.2),
    ("vgg16,res=64", 1.0),
    ("resnet18,res=32", 0.4),
    ("resnet18,res=64", 1.8),
  ):
    assert round(imagenet.estimate_hours(imagenet.get_config(arg)), 1) == hours
    assert f"{hours} h" in imagenet.__doc__


def test_config_data_path_through_the_host_pipeline(mock):
  """What the engine's host-fed path will consume equals what the device-resident runner loads:
  the same halves, standardization and batches; upstream random labels without an [S, N] table."""
  c = imagenet.get_config("resnet18,tiny,res=32")
  want = transfer_runner.load_data(
    c, placement="device"
  )  # the device-resident path: arrays in memory
  src = data.source(c.data.name, split="train", **c.data.kwargs)
  idx = data.split_indices(
    len(src), {"upstream": c.split.upstream, "downstream": c.split.downstream}, seed=c.split.seed
  )
  up, down = src.subset(idx["upstream"]), src.subset(idx["downstream"])
  mean, std = data.channel_stats(up, max_examples=c.data.stats_examples or None)
  ids = list(range(c.train.num_seeds))
  b = c.train.batch_size
  feed_up = pipeline.HostFeed(
    up,
    seed_ids=ids,
    data_seed=c.upstream.seed,
    batch_size=b,
    labels=pipeline.RandomLabels(c.upstream.label_seed, 1000),
    mean=mean,
    std=std,
  )
  chunk = feed_up.load(0, c.upstream.num_steps)
  labels = seeds.random_labels(c.upstream.label_seed, ids, len(up), 1000)
  for s in ids:
    bi = pipeline.batch_indices(c.upstream.seed, s, len(up), b, 0, c.upstream.num_steps)
    np.testing.assert_array_equal(chunk.x[s], want.data.parts["upstream"].x[bi])
    np.testing.assert_array_equal(chunk.y[s], labels[s][bi])
  feed_down = pipeline.HostFeed(
    down, seed_ids=ids, data_seed=c.downstream.seed, batch_size=b, mean=mean, std=std
  )
  chunk = feed_down.load(1, c.downstream.num_steps)
  for s in ids:
    bi = pipeline.batch_indices(c.downstream.seed, s, len(down), b, 1, c.downstream.num_steps)
    np.testing.assert_array_equal(chunk.x[s], want.data.parts["downstream"].x[bi])
    np.testing.assert_array_equal(chunk.y[s], want.data.parts["downstream"].y[bi])
  test = data.source(c.data.name, split=c.data.test_split, **c.data.kwargs)
  tx, ty = test.take(np.arange(c.data.test_examples))
  np.testing.assert_array_equal(
    data.standardize(data.to_unit_float(tx), mean, std), want.data.parts["test"].x
  )
  np.testing.assert_array_equal(ty, want.data.parts["test"].y)


def test_imagenet_tiny_runs_end_to_end_through_the_host_path(mock, tmp_path, monkeypatch):
  """imagenet.py:resnet18,tiny under tfds mock data: every phase streams from the host pipeline
  (no split is ever loaded as an array), the results have the config's shape, and a rerun reads
  every phase back from the workdir (nothing trains, nothing is re-read for statistics)."""
  c = imagenet.get_config("resnet18,tiny,res=32")

  def forbidden(name):
    def fail(*args, **kwargs):
      raise AssertionError(f"{name} called: placement=host must not need it")

    return fail

  with monkeypatch.context() as m:
    m.setattr(data, "load", forbidden("data.load"))
    out = transfer_runner.run(c, str(tmp_path))
  assert out["data"] == {
    "name": "imagenet",
    "placement": "host",
    "sizes": {"upstream": 24, "downstream": 24, "test": 16},
  }
  assert list(out["arms"]) == list(imagenet.ARMS)
  assert out["upstream"]["num_steps"] == 3 and out["upstream"]["num_classes"] == 1000
  for arm in imagenet.ARMS:
    r = out["arms"][arm]
    assert r["iterations"] == [0, 2, 4]
    acc = np.asarray(r["train_accuracy"], float)
    assert acc.shape == (2, 3) and np.all((acc >= 0) & (acc <= 1))
    assert len(r["test_accuracy"]) == 2 and all(0 <= a <= 1 for a in r["test_accuracy"])
    assert r["num_diverged"] == 0
  # The statistics: streamed over the upstream half, as load_splits computes them on arrays.
  src = data.source("imagenet", split="train", image_size=32)
  up = src.subset(
    data.split_indices(len(src), {"upstream": 24, "downstream": 24}, seed=0)["upstream"]
  )
  want_mean, want_std = data.channel_stats(up)
  stats = json.loads((tmp_path / "phases" / "standardization.json").read_text())
  np.testing.assert_array_equal(stats["mean"], want_mean)
  np.testing.assert_array_equal(stats["std"], want_std)
  assert (tmp_path / "results.json").exists() and (tmp_path / "imagenet.png").exists()
  # Rerun: every phase and the statistics are read back.
  with monkeypatch.context() as m:
    m.setattr(data, "load", forbidden("data.load"))
    m.setattr(train, "run_calls", forbidden("train.run_calls"))  # every engine call runs here
    m.setattr(data, "channel_stats", forbidden("data.channel_stats"))
    again = transfer_runner.run(c, str(tmp_path))
  assert {k: v for k, v in again.items() if k != "runtime_s"} == {
    k: v for k, v in out.items() if k != "runtime_s"
  }


def test_auto_placement_picks_by_size(mock, monkeypatch):
  c = imagenet.get_config("resnet18,tiny,res=32")
  c.data.placement = "auto"
  d = transfer_runner.load_data(c)  # 24 images of 32x32x3: device
  assert d.data.placement == "device" and d.data.parts["upstream"].x.shape == (24, 32, 32, 3)
  arrays = d.data.parts["upstream"].x
  monkeypatch.setattr(data, "device_memory_bytes", lambda device=None: 100_000)  # 100 kB "device"
  d = transfer_runner.load_data(c)
  assert d.data.placement == "host" and isinstance(d.data.parts["upstream"], inputs.StreamSplit)
  assert d.x_up.shape == (16, 32, 32, 3)  # the first layerwise.num_examples, for the arms
  np.testing.assert_array_equal(d.x_up, arrays[:16])  # the same rows, the same floats
