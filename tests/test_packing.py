"""Packed sweeps without threads: runners are generators of train calls, advanced in lockstep; a
member of a packed program equals its point run alone (bitwise on CPU)."""

import logging
import os

import jax
import numpy as np
import pytest

from rl_align import data as data_lib, errors, flops, models, packing, pipeline, seeds, sweep, train
from rl_align.engine import config as engine_config
from rl_align.engine import grouping
from tests.helpers import train_config
from tests.tolerances import assert_same_accuracy, assert_same_run


def _cfg(**kw):
  return train_config(
    **{
      "num_seeds": 2,
      "num_epochs": 2,
      "batch_size": 16,
      "log_every_steps": 4,
      "train_eval_examples": 32,
      **kw,
    }
  )


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  return rng.normal(size=(64, 6)).astype(np.float32)


# Points differing only in packable fields: learning rate, momentum, weight decay, root seed, init
# scale (a model field) and label draw.
POINTS = [
  dict(cfg=dict(learning_rate=0.05), model=dict(init_scale=1.0), label_seed=0),
  dict(
    cfg=dict(learning_rate=0.2, momentum=0.5, weight_decay=1e-2),
    model=dict(init_scale=1.0),
    label_seed=1,
  ),
  dict(cfg=dict(learning_rate=0.1, seed=7), model=dict(init_scale=0.5), label_seed=0),
]


@train.driven
def _runner(p, x, workdir=None, **cfg_kw):
  """A two-phase runner: train, then a second phase from the first one's params."""
  cfg = _cfg(**p["cfg"], **cfg_kw)
  model = models.DenseNet(widths=(8,), num_classes=3, **p["model"])
  labels = seeds.random_labels(p["label_seed"], seeds.seed_ids(cfg), len(x), 3)
  first = yield train.call(model, cfg, x, labels, workdir=workdir)
  second = yield train.call(
    model, cfg, x, labels, workdir=workdir, init_params=first.params, name="second"
  )
  return first, second


def _assert_same(a, b):
  # Same program per member: bitwise on CPU (member-major `map`); with vmap (accelerators) 6
  # members vs 2 sum in another order: the bound over the run's steps, one SGD step of
  # DenseNet((8,)) on 6 inputs chaining 6 + 8 + 3 + 8 + 16 + 16 + 8 roundings (as test_layouts.py).
  assert_same_run(a.params, b.params, a.final_step, 6 + 8 + 3 + 8 + 16 + 16 + 8, "params")
  assert_same_accuracy(a.final_metrics["train_accuracy"], b.final_metrics["train_accuracy"], 32)
  assert a.seed_ids == b.seed_ids
  rows = lambda r: [(m["phase"], m["step"], m["seed"], float(m["loss"])) for m in r.metrics]
  assert rows(a) == rows(b)


def test_packed_members_equal_their_points_alone(data, tmp_path):
  alone = [_runner(p, data) for p in POINTS]
  programs = []
  packed = packing.run_lockstep(
    [_runner.steps(p, data, str(tmp_path / f"p{i}")) for i, p in enumerate(POINTS)],
    str(tmp_path / "packed"),
    programs,
  )
  assert all(err is None for _, err in packed), [err for _, err in packed]
  assert programs == [6, 6], "each phase of the three points x 2 seeds must run as ONE program"
  for a, (b, _) in zip(alone, packed):
    _assert_same(a[0], b[0])
    _assert_same(a[1], b[1])
  # Each point's metrics went to its own workdir; the points differ (their lrs differ).
  assert not np.array_equal(
    packed[0][0][1].params["head"]["kernel"], packed[1][0][1].params["head"]["kernel"]
  )
  rows = [r for r in open(tmp_path / "p1" / "metrics.jsonl")]
  assert len(rows) == 2 * 2 * 2  # 2 phases x 2 seeds x 2 log steps (8 steps, logged every 4)
  # The packed state is in folders of its own, one per phase, never in a point's workdir.
  assert sorted(n.split("_")[0] for n in os.listdir(tmp_path / "packed")) == ["second", "train"]
  assert not any(n.endswith("_state") for i in range(3) for n in os.listdir(tmp_path / f"p{i}"))


def test_incompatible_points_run_as_separate_programs(data):
  other = dict(cfg=dict(batch_size=32), model=dict(init_scale=1.0), label_seed=0)
  programs = []
  out = packing.run_lockstep(
    [_runner.steps(POINTS[0], data), _runner.steps(other, data)], None, programs
  )
  assert [err for _, err in out] == [None, None]
  assert programs == [2, 2, 2, 2]
  _assert_same(out[1][0][1], _runner(other, data)[1])


def test_packed_run_resumes_after_a_crash(data, tmp_path):
  """A packed group stopped after its first phase (its state checkpointed at step 4 of 8) and
  rerun resumes from that checkpoint and ends where the uninterrupted packed run ends."""
  wds = [str(tmp_path / f"p{i}") for i in range(len(POINTS))]

  @train.driven
  def crashing(p, wd):
    cfg = _cfg(**p["cfg"], num_epochs=1)
    model = models.DenseNet(widths=(8,), num_classes=3, **p["model"])
    yield train.call(
      model,
      cfg,
      data,
      seeds.random_labels(p["label_seed"], seeds.seed_ids(cfg), len(data), 3),
      workdir=wd,
    )
    raise errors.NumericalError("crash")

  first = packing.run_lockstep(
    [crashing.steps(p, wd) for p, wd in zip(POINTS, wds)], str(tmp_path / "packed")
  )
  assert all(isinstance(err, errors.NumericalError) for _, err in first)
  ledger = flops.Ledger()
  again = packing.run_lockstep(
    [train.recorded(_runner.steps(p, data, wd), ledger) for p, wd in zip(POINTS, wds)],
    str(tmp_path / "packed"),
  )
  # The first phase resumed at step 4 of 8 in every point (one record per point's call).
  assert [(r["name"], r["steps"]) for r in ledger.records] == [("train", 4)] * 3 + [
    ("second", 8)
  ] * 3
  whole = packing.run_lockstep(
    [_runner.steps(p, data, str(tmp_path / f"w{i}")) for i, p in enumerate(POINTS)],
    str(tmp_path / "packed_w"),
  )
  for (a, err), (b, _) in zip(again, whole):
    assert err is None
    _assert_same(a[0], b[0])
    _assert_same(a[1], b[1])


def test_a_failed_program_raises_inside_its_runner_and_the_others_go_on(data):
  @train.driven
  def bad_init(p):
    cfg = _cfg(**p["cfg"])
    wrong = {"dense_0": {"kernel": np.zeros((2, 99, 8), np.float32)}}  # not the model's shapes
    try:
      yield train.call(
        models.DenseNet(widths=(8,), num_classes=3),
        cfg,
        data,
        np.zeros(len(data), np.int32),
        init_params=wrong,
      )
    except Exception as e:  # pylint: disable=broad-except
      return f"caught {type(e).__name__}"

  out = packing.run_lockstep(
    [_runner.steps(POINTS[0], data), bad_init.steps(POINTS[1]), _runner.steps(POINTS[2], data)]
  )
  value, err = out[1]
  assert err is None and value.startswith("caught "), out[1]
  assert out[0][1] is None and out[2][1] is None
  _assert_same(out[2][0][1], _runner(POINTS[2], data)[1])


def test_host_fed_calls_run_apart_each_with_its_own_data_order(caplog):
  src = data_lib.source("photos", n=64, size=8, seed=0)
  mean, std = data_lib.channel_stats(src)

  @train.driven
  def fed(seed):
    cfg = _cfg(seed=seed)
    feed = pipeline.HostFeed(
      src,
      seed_ids=seeds.seed_ids(cfg),
      data_seed=seed,
      batch_size=16,
      mean=mean,
      std=std,
      labels=pipeline.RandomLabels(1, 4),
    )
    return (yield train.call(models.DenseNet(widths=(8,), num_classes=4), cfg, feed, None))

  programs = []
  with caplog.at_level(logging.INFO):
    out = packing.run_lockstep([fed.steps(1), fed.steps(2)], None, programs)
  assert programs == [2, 2]
  said = [r.getMessage() for r in caplog.records if "host-fed" in r.getMessage()]
  assert len(said) == 1 and "2 host-fed call(s) of 2 run apart" in said[0], said
  for seed, (res, err) in zip((1, 2), out):
    assert err is None
    for pa, pb in zip(jax.tree.leaves(res.params), jax.tree.leaves(fed(seed).params)):
      np.testing.assert_array_equal(pa, pb)
  calls = [fed.steps(s).send(None) for s in (1, 2)]
  with pytest.raises(ValueError, match="host-fed calls cannot be packed"):
    train.run_calls(calls)


def test_several_calls_with_workdirs_need_a_packed_dir(data, tmp_path):
  calls = [
    _runner.steps(p, data, str(tmp_path / f"p{i}")).send(None) for i, p in enumerate(POINTS[:2])
  ]
  with pytest.raises(ValueError, match="need a packed_dir"):
    train.run_calls(calls)
  assert not os.path.exists(tmp_path / "p0" / "train_state")


def test_one_list_of_packable_fields_matches_the_engine_and_the_models():
  """sweep.PACKABLE is the one list; the engine-config fields in it are the per-member ones."""
  per_member = set(seeds.MEMBER_HPARAMS) | {"seed", "seed_offset", "num_seeds"}
  engine_fields = set(engine_config.default_config().keys())
  assert set(sweep.PACKABLE) & engine_fields == per_member
  m = models.DenseNet(widths=(8,), num_classes=3)
  assert grouping.program_model(m) == grouping.program_model(m.clone(init_scale=0.3))
  assert grouping.program_model(m) != grouping.program_model(m.clone(widths=(9,)))
  assert sweep.packable("model.init_scale") and not sweep.packable("model.widths")
  assert not sweep.packable("data.kwargs.seed")  # the data's seed changes x


def test_a_runner_yielding_a_list_packs_its_compatible_calls(data, tmp_path, caplog):
  """A runner's list of calls (the transfer arms, the specialization blocks): the compatible ones
  run as ONE program, the other alone; each result equals its call run alone; calls of one phase
  in one workdir keep their checkpoints and snapshots apart, and a rerun reads each one's back."""
  model = models.DenseNet(widths=(8,), num_classes=3)
  wide = models.DenseNet(widths=(9,), num_classes=3)
  cfgs = [_cfg(learning_rate=0.05), _cfg(learning_rate=0.2, seed_offset=2), _cfg()]
  cfgs = [c.copy_and_resolve_references() for c in cfgs]
  for c in cfgs:
    c.snapshot_steps = (4,)
  labels = [seeds.random_labels(0, seeds.seed_ids(c), len(data), 3) for c in cfgs]
  models_ = [model, model, wide]

  @train.driven
  def runner(wd):
    return (
      yield [
        train.call(m, c, data, y, workdir=wd, name="phase")
        for m, c, y in zip(models_, cfgs, labels)
      ]
    )

  alone = [train.train(m, c, data, y, name="phase") for m, c, y in zip(models_, cfgs, labels)]
  with caplog.at_level(logging.INFO):
    got = runner(str(tmp_path))
  assert any("4 members of 2 packed calls" in r.getMessage() for r in caplog.records)
  for a, b in zip(alone, got):
    _assert_same(a, b)
  assert sorted(os.listdir(tmp_path / "phase_snapshots")) == ["part0", "part1", "part2"]
  again = runner(str(tmp_path))  # every call resumes from its own finished state
  for a, b in zip(got, again):
    _assert_same(a, b)
    for k in a.snapshots:
      np.testing.assert_array_equal(a.snapshots[k]["first_kernel"], b.snapshots[k]["first_kernel"])
