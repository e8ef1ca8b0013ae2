"""The engine's equality guarantees in the layouts accelerators pick, run on any backend.

On CPU the engine runs member-major (`map`, `map_fused`) and tests/test_packing.py,
test_host_feed.py, test_multihost.py and test_train.py check their guarantees there, bitwise.  A
GPU picks `vmap` (dense nets), `vmap_im2col` (conv nets) or, as an option, the Pallas block
(`vmap_pallas`: Pallas interpret mode on CPU, Triton on a GPU).  Each guarantee is checked here in
each of those layouts, forced through the engine config:

- a packed member equals its point alone (`packing.Rendezvous`): NOT the same program (4 members
  vs 2: vmap batches another member count), so within the rounding bound on every backend;
- host-fed equals device-resident, a resumed run equals an uninterrupted one: the same
  per-member program on the same batches, so bitwise on CPU (measured) and within the bound
  elsewhere (autotuned kernels may sum in another order): `tolerances.assert_same_run`;
- 2 processes equal 1: jax.distributed with gloo collectives, a CPU test by design on every
  machine (the workers run with JAX_PLATFORMS=cpu), so bitwise; the trainings run in the session's
  one multi-process launch (tests/multihost.py, shared with tests/test_multihost.py).

Bound (tests/tolerances.py, f32_run_tol): eps of the default matmul x max |param| x steps x chain,
with `chain` the reductions and elementwise ops of one SGD step (_CHAIN).  The runs are 4 steps
(32 examples, batch 16, 2 epochs), so the errors compound over few steps: at their scale the
bound is ~1e-3 of the largest parameter, while members with another seed, point or data order
differ by O(param): checked > 100x the bound wherever the test has such a pair.
"""

import os

import jax
import numpy as np
import pytest

from rl_align import data, models, packing, pipeline, seeds, train
from tests import multihost
from tests.helpers import train_config
from tests.tolerances import assert_same_accuracy, assert_same_run

# (member_lift, conv_impl) of each accelerator layout; conv_impl None: the dense net.
LAYOUTS = [
  pytest.param("vmap", None, id="vmap"),
  pytest.param("vmap", "im2col", id="vmap_im2col"),
  pytest.param("vmap", "pallas", id="vmap_pallas"),
]
N, BATCH, EPOCHS, CLASSES = 32, 16, 2, 4
STEPS = EPOCHS * N // BATCH
# One SGD step's rounding chain on 8x8x3 inputs (as tests/test_train.py counts it): forward
# reductions of every layer, the backward ones, the batch sums of the kernel gradients (x 36
# output positions for the conv kernel) and ~8 elementwise ops.
_CHAIN = {
  None: 192 + 8 + 4 + 8 + BATCH + BATCH + 8,  # DenseNet((8,))
  "conv": 27 + 144 + 8 + 4 + 8 + 144 + BATCH * 36 + 8,
}  # PaperCNN(4, 8)


def _model(impl):
  if impl is None:
    return models.DenseNet(widths=(8,), num_classes=CLASSES)
  return models.PaperCNN(features=4, hidden=8, num_classes=CLASSES, conv_impl=impl)


def _chain(impl):
  return _CHAIN[None if impl is None else "conv"]


def _cfg(lift, impl, **kw):
  return train_config(
    **{
      "num_seeds": 2,
      "num_epochs": EPOCHS,
      "batch_size": BATCH,
      "log_every_steps": 2,
      "train_eval_examples": N,
      "seed": 5,
      "checkpoint_every_secs": 0.0,
      "member_lift": lift,
      "conv_impl": impl or "auto",
      **kw,
    }
  )


def _layout_name(lift, impl):
  return lift if impl is None else f"{lift}_{impl}"


@pytest.fixture(scope="module")
def photos():
  """(source, mean, std, standardized x): 32 embedded 8x8 photos."""
  src = data.source("photos", n=N, size=8, seed=0)
  mean, std = data.channel_stats(src)
  x_u8, _ = src.take(np.arange(len(src)))
  return src, mean, std, data.standardize(data.to_unit_float(x_u8), mean, std)


def _labels(cfg, root=1):
  return seeds.random_labels(root, seeds.seed_ids(cfg), N, CLASSES)


def _max_gap(a, b, pick_a=slice(None), pick_b=slice(None)):
  return max(
    float(np.abs(np.asarray(u)[pick_a] - np.asarray(v)[pick_b]).max())
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


@pytest.mark.parametrize("lift,impl", LAYOUTS)
def test_packed_member_equals_its_point_alone(photos, lift, impl, tmp_path):
  x = photos[3]
  points = [dict(learning_rate=0.05, label_root=1), dict(learning_rate=0.2, label_root=2)]

  @train.driven
  def point(p, workdir=None):
    cfg = _cfg(lift, impl, learning_rate=p["learning_rate"])
    return (yield train.call(_model(impl), cfg, x, _labels(cfg, p["label_root"]), workdir=workdir))

  alone = [point(p) for p in points]
  programs = []
  packed = packing.run_lockstep(
    [point.steps(p, str(tmp_path / f"p{i}")) for i, p in enumerate(points)],
    str(tmp_path / "packed"),
    programs,
  )
  assert all(err is None for _, err in packed), [err for _, err in packed]
  assert programs == [4], "2 points x 2 seeds must run as ONE program"
  for i, (a, (b, _)) in enumerate(zip(alone, packed)):
    assert a.layout == b.layout == _layout_name(lift, impl)
    # 4 members vs 2 in one vmap: another program, so not bitwise even on CPU.
    tol = assert_same_run(b.params, a.params, STEPS, _chain(impl), f"point {i}", bitwise=False)
    assert_same_accuracy(
      b.final_metrics["train_accuracy"],
      a.final_metrics["train_accuracy"],
      N,
      f"point {i}",
      bitwise=False,
    )
    assert _max_gap(a.params, packed[1 - i][0].params) > 100 * tol  # the bound is sharp


@pytest.mark.parametrize("lift,impl", LAYOUTS)
def test_host_fed_equals_device_resident(photos, lift, impl, tmp_path):
  src, mean, std, x = photos
  cfg = _cfg(lift, impl)
  dev = train.train(_model(impl), cfg, x, _labels(cfg))
  feed = pipeline.HostFeed(
    src,
    seed_ids=seeds.seed_ids(cfg),
    data_seed=cfg.seed,
    batch_size=BATCH,
    mean=mean,
    std=std,
    labels=pipeline.RandomLabels(1, CLASSES),
  )
  host = train.train(_model(impl), cfg, feed, None, workdir=str(tmp_path))
  assert dev.layout == host.layout == _layout_name(lift, impl)
  assert_same_run(host.params, dev.params, STEPS, _chain(impl), "host-fed")
  assert_same_accuracy(
    host.final_metrics["train_accuracy"], dev.final_metrics["train_accuracy"], N, "host-fed"
  )


@pytest.mark.parametrize("lift,impl", LAYOUTS)
def test_resumed_run_equals_uninterrupted(photos, lift, impl, tmp_path):
  x = photos[3]
  cfg = _cfg(lift, impl)
  full = train.train(_model(impl), cfg, x, _labels(cfg), workdir=str(tmp_path / "a"))
  # Interrupted after one epoch (a shorter run on the same workdir), then the full run resumes.
  train.train(
    _model(impl), _cfg(lift, impl, num_epochs=1), x, _labels(cfg), workdir=str(tmp_path / "b")
  )
  resumed = train.train(_model(impl), cfg, x, _labels(cfg), workdir=str(tmp_path / "b"))
  assert resumed.layout == _layout_name(lift, impl)
  assert min(r["step"] for r in resumed.metrics) == STEPS // EPOCHS  # resumed, not re-run
  assert_same_run(resumed.params, full.params, STEPS, _chain(impl), "resumed")


@pytest.mark.slow  # several processes
@pytest.mark.parametrize("lift,impl", LAYOUTS)
def test_two_processes_equal_one(lift, impl, worker_launch):
  """1 process x 2 devices vs 2 processes x 1 device (jax.distributed, gloo on CPU), device-
  resident, 1 epoch (6 steps): each device runs the same 2 of the 4 members with the same program,
  so bitwise (measured with 12 steps for vmap and vmap_im2col; 6 steps keep the Pallas interpret
  run short).  Both sides are the session's one launch of tests/multihost_worker.py
  (tests/multihost.py, job `name`, after the same other jobs in the same processes)."""
  name = _layout_name(lift, impl)
  one_dir, two_dir = (os.path.join(worker_launch["root"], side, name) for side in ("one", "two"))
  assert "in 1 process(es)" in worker_launch["one"][1]
  assert "in 2 process(es)" in worker_launch["two"][0][1]
  for out, count in ((one_dir, 1), (two_dir, 2)):
    log = multihost.feed_log(out, 0)
    assert log["layout"] == name
    assert (log["process_count"], log["devices"]) == (count, 2)
  one, two = multihost.params(one_dir), multihost.params(two_dir)
  assert_same_run(two, one, 6, _chain(impl), "2 processes", bitwise=True)
  assert_same_accuracy(
    np.load(os.path.join(two_dir, "train_accuracy.npy")),
    np.load(os.path.join(one_dir, "train_accuracy.npy")),
    32,
    "2 processes",
    bitwise=True,
  )
  assert not np.array_equal(one[0][0], one[0][1])  # the members did train differently


def test_same_run_helpers_catch_what_they_must():
  """The helpers above: bitwise where asked, the float32 run bound elsewhere, one example of
  accuracy; each fails on a difference just past its bound."""
  a = np.ones((3, 4), np.float32)
  tol = assert_same_run(a + 1e-5, a, 8, 624, "x", bitwise=False)  # 2 eps x 1 x 4992 = 1.2e-3
  assert 1e-3 < tol < 1.3e-3
  with pytest.raises(AssertionError, match="rounding bound"):
    assert_same_run(a + 2 * tol, a, 8, 624, "x", bitwise=False)
  with pytest.raises(AssertionError, match="bitwise"):
    assert_same_run(a + 1e-7 * a, a, 8, 624, "x", bitwise=True)
  assert_same_accuracy([0.5, 0.25], [0.5 + 1 / 32, 0.25], 32, bitwise=False)
  with pytest.raises(AssertionError):
    assert_same_accuracy([0.5], [0.5 + 2 / 32], 32, bitwise=False)
