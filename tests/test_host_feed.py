"""Host-fed training (batches streamed by rl_align.pipeline) equals device-resident training."""

import numpy as np
import pytest

from rl_align import data, models, pipeline, seeds, train
from tests.helpers import train_config
from tests.tolerances import assert_same_accuracy, assert_same_run, bitwise_backend, f32_tol

# One SGD step's rounding chain, the larger model's: PaperCNN(4, 8) on 8x8x3 (as test_layouts.py).
_CHAIN = 27 + 144 + 8 + 4 + 8 + 144 + 16 * 36 + 8


def _cfg(**kw):
  return train_config(
    **{
      "num_seeds": 3,
      "num_epochs": 2,
      "batch_size": 16,
      "log_every_steps": 3,
      "train_eval_examples": 32,
      "seed": 5,
      "checkpoint_every_secs": 0.0,
      **kw,
    }
  )


@pytest.fixture  # cheap, so per test: xdist may spread this file (tests/conftest.py)
def photos():
  src = data.source("photos", n=96, size=8, seed=0)
  mean, std = data.channel_stats(src)
  x_u8, _ = src.take(np.arange(len(src)))
  x = data.standardize(data.to_unit_float(x_u8), mean, std)
  return src, mean, std, x


def _feed(src, mean, std, cfg, label_root=1):
  return pipeline.HostFeed(
    src,
    seed_ids=seeds.seed_ids(cfg),
    data_seed=cfg.seed,
    batch_size=cfg.batch_size,
    mean=mean,
    std=std,
    labels=pipeline.RandomLabels(label_root, 4),
  )


def _leaves_equal(a, b, steps=12):
  # The same arithmetic on the same batches: bitwise on CPU, else within the rounding bound.
  assert_same_run(b, a, steps, _CHAIN, "params")


@pytest.mark.parametrize(
  "model,buffer_steps",
  [
    (models.DenseNet(widths=(8,), num_classes=4), None),
    (models.PaperCNN(features=4, hidden=8, num_classes=4), None),
    (models.PaperCNN(features=4, hidden=8, num_classes=4), 2),
  ],
  ids=["dense", "paper_cnn", "paper_cnn_2_step_buffers"],
)
def test_host_fed_equals_device_resident(photos, model, buffer_steps, tmp_path):
  """Final params and every logged number (losses, accuracies) are equal.  With 2-step buffers the
  3-step log intervals cross buffer ends: an interval's loss still sums as one loop."""
  src, mean, std, x = photos
  cfg = _cfg()
  labels = seeds.random_labels(1, seeds.seed_ids(cfg), len(x), 4)
  dev = train.train(model, cfg, x, labels)
  feed = _feed(src, mean, std, cfg)
  if buffer_steps:  # a budget of buffer_steps steps for up to 4 (padded) members
    feed.chunk_bytes = buffer_steps * 4 * 4 * cfg.batch_size * int(np.prod(src.example_shape))
  host = train.train(model, cfg, feed, None, workdir=str(tmp_path))
  _leaves_equal(dev.params, host.params)
  assert_same_accuracy(
    host.final_metrics["train_accuracy"],
    dev.final_metrics["train_accuracy"],
    cfg.train_eval_examples,
  )
  assert len(host.metrics) == len(dev.metrics) > 0
  for a, b in zip(dev.metrics, host.metrics):
    assert a.keys() == b.keys()
    for k in a:
      va, vb = np.asarray(a[k]), np.asarray(b[k])
      if k == "loss" and bitwise_backend():
        # The batch loss is a forward-only mean: the two programs may reduce its B terms (summed
        # over an interval's steps) in another order.  Nothing else may differ (on CPU).
        tol = f32_tol(np.abs(va), cfg.batch_size * cfg.log_every_steps)
        np.testing.assert_allclose(vb, va, rtol=0, atol=tol, err_msg=k)
      elif k.endswith("accuracy"):  # batch_accuracy: a mean over an interval's batches
        assert_same_accuracy(
          vb,
          va,
          cfg.batch_size * cfg.log_every_steps
          if k == "batch_accuracy"
          else cfg.train_eval_examples,
          k,
        )
      elif k.endswith("loss"):  # off CPU: a forward pass of params within the run's bound
        assert_same_run(vb, va, max(a["step"], 1), _CHAIN, k)
      else:
        np.testing.assert_array_equal(va, vb, err_msg=k)


def test_host_fed_resumes_bitwise(photos, tmp_path):
  src, mean, std, _ = photos
  model = models.PaperCNN(features=4, hidden=8, num_classes=4)
  cfg = _cfg()
  full = train.train(model, cfg, _feed(src, mean, std, cfg), None, workdir=str(tmp_path / "a"))
  # Interrupted after one epoch (a shorter run on the same workdir), then the full run resumes.
  short = _cfg(num_epochs=1)
  train.train(model, short, _feed(src, mean, std, short), None, workdir=str(tmp_path / "b"))
  resumed = train.train(model, cfg, _feed(src, mean, std, cfg), None, workdir=str(tmp_path / "b"))
  assert any(r["step"] == 6 for r in resumed.metrics)
  _leaves_equal(full.params, resumed.params)


def test_feed_must_match_the_config(photos):
  src, mean, std, _ = photos
  cfg = _cfg()
  from rl_align import errors

  with pytest.raises(errors.ConfigError, match="seed ids"):
    train.train(
      models.PaperCNN(features=4, hidden=8, num_classes=4),
      _cfg(seed_offset=1),
      _feed(src, mean, std, cfg),
      None,
    )
  with pytest.raises(errors.ConfigError, match="labels come from the feed"):
    train.train(
      models.PaperCNN(features=4, hidden=8, num_classes=4),
      cfg,
      _feed(src, mean, std, cfg),
      np.zeros(96, np.int32),
    )
