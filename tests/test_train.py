"""Tests of the multi-seed engine (rl_align.train)."""

import os
import textwrap

import flax.linen as nn
import jax
import numpy as np
import pytest

from rl_align import errors, metric_writers, models, seeds, train
from rl_align.engine import config as engine_config
from rl_align.engine import layout as engine_layout
from rl_align.engine import optimizer as engine_optimizer
from tests.helpers import run_python, train_config
from tests.tolerances import assert_close, assert_same_run, f32_run_tol, f32_tol


class TinyMLP(nn.Module):
  num_classes: int = 4

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(16, name="dense_0")(x))
    return nn.Dense(self.num_classes, name="head")(x)


class TinyCNN(nn.Module):
  num_classes: int = 4

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), padding="VALID", name="conv_0")(x))
    return nn.Dense(self.num_classes, name="head")(x.reshape(x.shape[0], -1))


def _cfg(**kw):
  return train_config(
    **{
      "num_seeds": 3,
      "num_epochs": 2,
      "batch_size": 16,
      "learning_rate": 0.05,
      "train_eval_examples": 64,
      **kw,
    }
  )


@pytest.fixture  # cheap, so per test: xdist may spread this file (tests/conftest.py)
def data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(96, 6)).astype(np.float32)
  return x, seeds.random_labels(0, range(3), 96, 4)


# Rounding chain of one training step (tests/tolerances.py, f32_run_tol): forward and backward
# reductions of every layer, the sum over the batch (16; x 16 output positions for a conv kernel)
# and ~8 elementwise ops (bias, ReLU, softmax, momentum, update).
_MLP_CHAIN = 6 + 16 + 4 + 16 + 16 + 8  # TinyMLP
_CNN_CHAIN = 18 + 64 + 4 + 64 + 16 * 16 + 8  # TinyCNN (3x3x2 conv, 4x4x4 flatten)
_PAPER_CHAIN = 18 + 64 + 8 + 3 + 8 + 64 + 16 * 16 + 8  # PaperCNN(features=4, hidden=8)


def _assert_runs_agree(run_a, run_b, steps, chain, pick_a=slice(None), pick_b=slice(None)):
  """Two float32 runs that differ only in summation order agree within f32_run_tol (param scale =
  the largest |parameter|); returns the tolerance."""
  leaves = [
    (np.asarray(a)[pick_a], np.asarray(b)[pick_b])
    for a, b in zip(jax.tree.leaves(run_a), jax.tree.leaves(run_b))
  ]
  tol = float(f32_run_tol(max(float(np.abs(a).max()) for a, _ in leaves), steps, chain))
  for i, (a, b) in enumerate(leaves):
    assert_close(a, b, tol, f"leaf {i}")
  return tol


_CPU_ONLY = pytest.mark.skipif(
  jax.default_backend() != "cpu", reason="a claim about the XLA:CPU backend; CI runs on CPU"
)


@_CPU_ONLY
def test_two_devices_are_exposed_on_cpu():
  # rl_align/__init__ exposes one XLA host device per core; CI has 2 cores.
  if (os.cpu_count() or 1) >= 2:
    assert len(jax.devices()) >= 2


@pytest.mark.parametrize("lift", ["unroll", "vmap", "map"])
def test_seed_alone_equals_seed_in_batch(data, lift):
  x, labels = data
  batch = train.train(TinyMLP(), _cfg(member_lift=lift), x, labels)
  alone = train.train(TinyMLP(), _cfg(member_lift=lift, num_seeds=1, seed_offset=1), x, labels[1:2])
  # Not bitwise: S=1 and S=3 are different programs (vmap differs by 1 ulp on an AMD EPYC).
  tol = _assert_runs_agree(batch.params, alone.params, batch.final_step, _MLP_CHAIN, 1, 0)
  wrong = max(
    float(np.abs(a[0] - b[0]).max())
    for a, b in zip(jax.tree.leaves(batch.params), jax.tree.leaves(alone.params))
  )
  assert wrong > 100 * tol  # the tolerance still tells a wrong seed index apart
  assert batch.layout == lift  # a dense model: no conv implementation


def test_layouts_agree_and_seeds_differ(data):
  x, labels = data
  runs = [train.train(TinyMLP(), _cfg(member_lift=l), x, labels) for l in ("unroll", "vmap", "map")]
  for other in runs[1:]:  # different programs: summation order only
    tol = _assert_runs_agree(runs[0].params, other.params, runs[0].final_step, _MLP_CHAIN)
  k = runs[0].params["dense_0"]["kernel"]
  assert np.abs(k[0] - k[1]).max() > 100 * tol  # seeds have their own init and data order


def test_conv_impl_is_ignored_by_a_conv_model_without_conv_impl():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(48, 6, 6, 2)).astype(np.float32)
  labels = seeds.random_labels(0, range(2), 48, 4)
  res = train.train(TinyCNN(), _cfg(num_seeds=2, member_lift="map", conv_impl="im2col"), x, labels)
  assert res.params["conv_0"]["kernel"].shape == (2, 3, 3, 2, 4)
  assert np.isfinite(res.final_metrics["train_loss"]).all()


def test_auto_layout_follows_the_measurements():
  conv, dense, small = models.PaperCNN(features=4), models.DenseNet(), models.SmallCNN()
  choose, Layout = engine_layout.choose_layout, engine_layout.Layout
  assert choose(conv, "cpu") == Layout("map", "fused")
  assert choose(small, "cpu") == Layout("map", "fused")  # = im2col without a fused block
  assert choose(dense, "cpu") == Layout("map", None) and choose(dense, "cpu").name == "map"
  # GPU (H200): vmap over conv-as-matmul beats vmap over lax convs (a grouped conv) 2.5x.
  assert choose(conv, "gpu") == choose(small, "gpu") == Layout("vmap", "im2col")
  assert choose(conv, "gpu").name == "vmap_im2col"
  assert choose(dense, "gpu") == choose(dense, "tpu") == Layout("vmap", None)


def test_gradient_micro_batches_follow_the_measurements():
  # CPU conv nets: the smallest divisor m of the batch with n_params / m <= 2**14.
  assert engine_layout.choose_microbatch("cpu", 20_000, True, 128) == 2  # the small CNN
  assert engine_layout.choose_microbatch("cpu", 300_000, True, 128) == 32  # 300_000 / 16 > 2**14
  assert engine_layout.choose_microbatch("cpu", 14_700_000, True, 256) == 256  # the paper CNN: none
  assert engine_layout.choose_microbatch("cpu", 20_000, True, 127) == 127  # no divisor fits: none
  assert engine_layout.choose_microbatch("cpu", 20_000, True, 128, blocks_in_cache=True) == 128
  assert engine_layout.choose_microbatch("cpu", 20_000, False, 128) == 128  # dense nets: none
  assert engine_layout.choose_microbatch("gpu", 20_000, True, 128) == 128  # GPU: wide kernels


def test_micro_batched_gradient_trains_like_the_full_batch():
  x = np.random.default_rng(4).normal(size=(32, 6, 6, 2)).astype(np.float32)
  labels = seeds.random_labels(0, range(2), 32, 4)
  runs = [
    train.train(
      TinyCNN(),
      _cfg(num_seeds=2, grad_microbatch=m, snapshot_steps=(0,)),
      x,
      labels,
      snapshot_fn=lambda p: p,
    )
    for m in (2, 16)
  ]
  # Float32 summation order only (the mean of 8 micro-batch gradients vs one batch gradient).
  tol = _assert_runs_agree(runs[0].params, runs[1].params, runs[0].final_step, _CNN_CHAIN)
  moved = max(
    float(np.abs(a - p0).max())
    for a, p0 in zip(jax.tree.leaves(runs[0].params), jax.tree.leaves(runs[0].snapshots[0]))
  )
  assert moved > 100 * tol  # the runs trained: the comparison is not between two inits


def test_device_count():
  assert engine_layout.choose_devices(2, 16) == 2
  assert engine_layout.choose_devices(2, 1) == 1  # never more devices than seeds
  assert engine_layout.choose_devices(2, 16, requested=1) == 1
  assert engine_layout.choose_devices(2, 16, requested=8) == 2  # never more than exist
  # Padding (members added so that every device holds as many) at most 1/8 of the padded members:
  assert engine_layout.choose_devices(2, 5) == 1  # 5 on 2 devices would run as 6
  assert engine_layout.choose_devices(2, 9) == 2  # 10 padded: 1/10 is waste
  assert engine_layout.choose_devices(16, 5) == 5
  assert engine_layout.choose_devices(4, 7) == 4  # 8 padded: exactly 1/8
  assert engine_layout.choose_devices(2, 5, requested=2) == 2  # asked for: padded to 6
  with pytest.raises(errors.ConfigError, match="num_devices"):
    engine_config.validate(
      _cfg(num_devices=-1), TinyMLP(), np.zeros((32, 6), np.float32), np.zeros((3, 32), np.int32)
    )


@pytest.mark.parametrize("lift,impl", [("map", "fused"), ("map", "im2col"), ("vmap", "im2col")])
def test_paper_cnn_seed_alone_equals_seed_in_batch(lift, impl):
  x = np.random.default_rng(2).normal(size=(32, 6, 6, 2)).astype(np.float32)
  labels = seeds.random_labels(0, range(3), 32, 3)
  model = models.PaperCNN(features=4, hidden=8, num_classes=3)
  kw = {"member_lift": lift, "conv_impl": impl}
  batch = train.train(model, _cfg(**kw), x, labels)
  alone = train.train(model, _cfg(**kw, num_seeds=1, seed_offset=1), x, labels[1:2])
  assert batch.layout == alone.layout == f"{lift}_{impl}"
  tol = _assert_runs_agree(batch.params, alone.params, batch.final_step, _PAPER_CHAIN, 1, 0)
  wrong = max(
    float(np.abs(a[0] - b[0]).max())
    for a, b in zip(jax.tree.leaves(batch.params), jax.tree.leaves(alone.params))
  )
  assert wrong > 100 * tol  # the tolerance still tells a wrong seed index apart


def test_fused_and_lax_paper_cnn_train_alike():
  x = np.random.default_rng(3).normal(size=(32, 6, 6, 2)).astype(np.float32)
  labels = seeds.random_labels(0, range(2), 32, 3)
  model = models.PaperCNN(features=4, hidden=8, num_classes=3)
  runs = [
    train.train(model, _cfg(num_seeds=2, member_lift=l, conv_impl=i), x, labels)
    for l, i in (("map", "fused"), ("unroll", "lax"))
  ]
  assert runs[1].layout == "unroll_lax"
  # Float32 round-off of two summation orders over 2 epochs (measured 6e-8 on an AMD EPYC CPU,
  # 1.1e-5 once on an H200 at full f32 precision); the bound here is 8e-4 on parameters ~0.65.
  _assert_runs_agree(runs[0].params, runs[1].params, runs[0].final_step, _PAPER_CHAIN)


@_CPU_ONLY
def test_forcing_a_lax_conv_loop_on_cpu_warns(caplog):
  x = np.random.default_rng(0).normal(size=(32, 6, 6, 2)).astype(np.float32)
  labels = seeds.random_labels(0, [0, 1], 32, 3)
  model = models.PaperCNN(features=4, hidden=8, num_classes=3)
  for impl, warns in (("lax", True), ("auto", False)):
    caplog.clear()
    res = train.train(model, _cfg(num_seeds=2, member_lift="map", conv_impl=impl), x, labels)
    assert res.layout == ("map_lax" if warns else "map_fused")
    assert any("10x" in r.getMessage() for r in caplog.records) == warns


def test_random_labels_learnable_and_metrics_logged(data, tmp_path):
  x, labels = data
  res = train.train(
    TinyMLP(), _cfg(num_epochs=60, learning_rate=0.1), x, labels, workdir=str(tmp_path)
  )
  # 96 points, 4 random classes, 16 hidden units: memorization lifts train accuracy well above 1/4.
  assert res.final_metrics["train_accuracy"].mean() > 0.5
  rows, bad = metric_writers.parse_jsonl(str(tmp_path / "metrics.jsonl"))
  assert {r["seed"] for r in rows} == {0, 1, 2} and not bad
  assert rows[-1]["step"] == res.final_step == 60 * (96 // 16)
  assert {"loss", "batch_accuracy", "train_accuracy", "alive"} <= set(rows[-1])


def test_snapshots_at_epochs(data):
  x, labels = data
  res = train.train(TinyMLP(), _cfg(snapshot_epochs=(0, 1, 2)), x, labels)
  assert sorted(res.snapshots) == [0, 6, 12]
  assert res.snapshots[6]["first_kernel"].shape == (3, 6, 16)
  np.testing.assert_array_equal(res.snapshots[12]["first_kernel"], res.params["dense_0"]["kernel"])
  assert not np.allclose(res.snapshots[0]["first_kernel"], res.snapshots[6]["first_kernel"])


@pytest.mark.parametrize("lift", engine_layout.MEMBER_LIFTS)
def test_nan_seed_is_frozen_and_others_finish(data, lift):
  """A member whose loss turns NaN keeps its values from before that step (the update runs under
  lax.cond; under vmap it is a select), on every member lift; the other members are unaffected."""
  x, labels = data
  init = jax.tree.map(np.copy, _init_params(x, labels))
  init["dense_0"]["kernel"][1, 0, 0] = np.nan
  res = train.train(TinyMLP(), _cfg(member_lift=lift), x, labels, init_params=init)
  assert res.diverged.tolist() == [False, True, False]
  assert res.diverged_step.tolist() == [-1, 0, -1]
  for got, start in zip(jax.tree.leaves(res.params), jax.tree.leaves(init)):
    np.testing.assert_array_equal(got[1], start[1])  # frozen at step 0 (NaN in the same place)
  ref = train.train(
    TinyMLP(), _cfg(member_lift=lift), x, labels, init_params=_init_params(x, labels)
  )
  # Exact: the same program on the same inputs for seeds 0 and 2 (seeds never mix), on one machine.
  np.testing.assert_array_equal(
    res.params["head"]["kernel"][[0, 2]], ref.params["head"]["kernel"][[0, 2]]
  )


def _init_params(x, labels):
  return train.train(
    TinyMLP(), _cfg(num_steps=1, snapshot_steps=(0,)), x, labels, snapshot_fn=lambda p: p
  ).snapshots[0]


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("optimizer", "rmsprop", "optimizer"),
    ("num_seeds", 0, "num_seeds"),
    ("batch_size", 1000, "batch_size"),
    ("member_lift", "magic", "member_lift"),
    ("conv_impl", "fft", "conv_impl"),
    ("grad_microbatch", 5, "grad_microbatch"),
    ("grad_microbatch", -1, "grad_microbatch"),
    ("schedule", "exp", "schedule"),
    ("learning_rate", -1.0, "learning_rate"),
  ],
)
def test_invalid_config_is_a_clear_error(data, field, value, match):
  x, labels = data
  cfg = _cfg(**{field: value})
  lab = labels if field != "num_seeds" else labels[0]
  with pytest.raises(errors.ConfigError, match=match):
    train.train(TinyMLP(), cfg, x, lab)


def test_bad_data_is_a_clear_error(data):
  x, labels = data
  bad = x.copy()
  bad[3, 2] = np.nan
  with pytest.raises(errors.DataError, match="NaN"):
    train.train(TinyMLP(), _cfg(), bad, labels)
  with pytest.raises(errors.DataError, match="num_classes"):
    train.train(TinyMLP(num_classes=2), _cfg(), x, labels)
  with pytest.raises(errors.DataError, match="num_seeds"):
    train.train(TinyMLP(), _cfg(num_seeds=2), x, labels)


def test_adam_warns_about_symmetry(data, caplog):
  x, labels = data
  from absl import logging as absl_logging

  with caplog.at_level("WARNING"):
    absl_logging.get_absl_logger().propagate = True
    engine_optimizer.make_optimizer(_cfg(optimizer="adam"), 10)
  assert "rotation symmetry" in caplog.text


_CRASH_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    sys.path.insert(0, os.path.dirname({tests!r}))   # test_train imports tests.tolerances
    from absl import logging
    logging.set_verbosity("info")
    from rl_align import seeds, train
    from rl_align.engine import records as engine_records
    from test_train import TinyMLP, _cfg
    x = np.random.default_rng(0).normal(size=(96, 6)).astype(np.float32)
    labels = seeds.random_labels(0, range(3), 96, 4)
    calls = []
    def snap(p):
      calls.append(1)
      if sys.argv[2] == "crash" and len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)   # dies at step 24, before its checkpoint
      return engine_records.first_layer_snapshot(p)
    cfg = _cfg(num_epochs=8, checkpoint_every_secs=0.0, snapshot_steps=(12, 24))
    res = train.train(TinyMLP(), cfg, x, labels, workdir=sys.argv[1], snapshot_fn=snap)
    np.savez(os.path.join(sys.argv[1], "final.npz"), *[np.asarray(a) for a in
             __import__("jax").tree.leaves(res.params)])
""")


@pytest.mark.slow
def test_kill_9_then_resume_is_bitwise_identical(tmp_path):
  script = tmp_path / "run.py"
  script.write_text(_CRASH_SCRIPT.format(tests=os.path.dirname(__file__)))
  run = lambda wd, mode: run_python(str(script), str(wd), mode, timeout=300)
  ref, crashed = tmp_path / "ref", tmp_path / "crashed"
  assert run(ref, "normal").returncode == 0
  first = run(crashed, "crash")
  assert first.returncode == -9, first.stderr[-2000:]
  assert not (crashed / "final.npz").exists()
  second = run(crashed, "normal")
  assert second.returncode == 0, second.stderr[-2000:]
  assert "resumed from step 18" in second.stderr  # checkpoints at log steps 6, 12, 18
  assert "Saving checkpoint" not in second.stderr  # orbax's INFO chatter is filtered
  with np.load(ref / "final.npz") as a, np.load(crashed / "final.npz") as b:
    for k in a.files:  # bitwise on CPU; off CPU the bound over 48 steps (another process)
      assert_same_run(b[k], a[k], 48, _MLP_CHAIN, k)
  rows, _ = metric_writers.parse_jsonl(str(crashed / "metrics.jsonl"))
  steps = [r["step"] for r in rows if r["seed"] == 0]
  assert steps == sorted(set(steps)), "resume must not duplicate metric rows"
  assert sorted(os.listdir(crashed / "train_snapshots")) == [
    "step_00000012.npz",
    "step_00000024.npz",
  ]


def test_probe_fn_is_logged_per_seed(data):
  x, labels = data
  probe_x = x[:8]

  def probe(model, params):
    h = probe_x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"]
    return {
      "active_fraction": (h > 0).mean(),
      "kernel_norm": (params["dense_0"]["kernel"] ** 2).sum(),
    }

  res = train.train(TinyMLP(), _cfg(), x, labels, probe_fn=probe)
  last = [r for r in res.metrics if r["step"] == res.final_step]
  assert len(last) == 3
  for r in last:
    k = res.params["dense_0"]["kernel"][r["seed"]]
    # A float32 sum of 6 x 16 positive squares, two orders: 2 eps x 96 relative (tests/tolerances.py).
    norm = float((k.astype(np.float64) ** 2).sum())
    assert_close(r["probe/kernel_norm"], norm, f32_tol(norm, k.size + 1), "kernel_norm")
    assert 0.0 <= r["probe/active_fraction"] <= 1.0


def test_checkpoints_round_trip_bitwise_and_read_the_standard_format(tmp_path):
  """`engine.checkpoint.Checkpointer` writes numpy leaves without orbax's defensive copy and reads
  back every leaf bitwise (dtype and shape included); a checkpoint written by orbax's
  StandardSave (what earlier versions wrote) restores the same way; a template of another shape is
  refused."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from rl_align.engine import checkpoint, programs  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  state = programs.TrainState(
    params={"dense": {"kernel": rng.standard_normal((2, 5, 3)).astype(np.float32)}},
    opt_state=(
      {"mu": rng.standard_normal((2, 5, 3)).astype(np.float32)},
      np.array([7, 7], np.int32),
    ),
    alive=np.array([True, False]),
    div_step=np.array([-1, 4], np.int32),
  )
  template = jax.tree.map(np.zeros_like, state)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "new"))
  assert ckpt.restore(template) is None
  ckpt.save(3, state)
  opts = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
  old = ocp.CheckpointManager(str(tmp_path / "old" / "checkpoints"), options=opts)
  old.save(3, args=ocp.args.StandardSave(tuple(state)), force=True)
  old.wait_until_finished()
  for root in ("new", "old"):
    step, got = checkpoint.Checkpointer(str(tmp_path / root)).restore(template)
    assert step == 3 and jax.tree.structure(got) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(state)):
      assert type(a) is np.ndarray and a.dtype == b.dtype
      np.testing.assert_array_equal(a, b)
  # A template of another shape (another width, same tree) is refused with the leaf's name.
  wider = template._replace(params={"dense": {"kernel": np.zeros((2, 5, 4), np.float32)}})
  with pytest.raises(errors.ConfigError, match=r"\['dense'\]\['kernel'\] has shape \(2, 5, 3\)"):
    ckpt.restore(wider)
