"""Packed sweeps: members of one engine program equal their points run alone (bitwise on CPU)."""
import numpy as np
import pytest

from rl_align import models, packing, seeds, train
from rl_align.engine import config as engine_config
from tests.tolerances import assert_same_accuracy, assert_same_run


def _cfg(**kw):
  c = engine_config.default_config()
  c.num_seeds, c.num_epochs, c.batch_size, c.log_every_steps = 2, 2, 16, 4
  c.train_eval_examples = 32
  for k, v in kw.items():
    c[k] = v
  return c


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  return rng.normal(size=(64, 6)).astype(np.float32)


# Points differing only in packable fields: learning rate, momentum, weight decay, root seed, init
# scale (a model field) and label draw.
POINTS = [
    dict(cfg=dict(learning_rate=0.05), model=dict(init_scale=1.0), label_seed=0),
    dict(cfg=dict(learning_rate=0.2, momentum=0.5, weight_decay=1e-2), model=dict(init_scale=1.0),
         label_seed=1),
    dict(cfg=dict(learning_rate=0.1, seed=7), model=dict(init_scale=0.5), label_seed=0),
]


def _point(p, x, workdir=None):
  cfg = _cfg(**p["cfg"])
  model = models.DenseNet(widths=(8,), num_classes=3, **p["model"])
  labels = seeds.random_labels(p["label_seed"], seeds.seed_ids(cfg), len(x), 3)
  return lambda: train.train(model, cfg, x, labels, workdir=workdir)


def _assert_same(a, b):
  # Same program per member: bitwise on CPU (member-major `map`); with vmap (accelerators) 6
  # members vs 2 sum in another order: the bound over the run's steps, one SGD step of
  # DenseNet((8,)) on 6 inputs chaining 6 + 8 + 3 + 8 + 16 + 16 + 8 roundings (as test_layouts.py).
  assert_same_run(a.params, b.params, a.final_step, 6 + 8 + 3 + 8 + 16 + 16 + 8, "params")
  assert_same_accuracy(a.final_metrics["train_accuracy"], b.final_metrics["train_accuracy"], 32)
  assert a.seed_ids == b.seed_ids


def test_packed_members_equal_their_points_alone(data, tmp_path):
  alone = [_point(p, data)() for p in POINTS]
  rv = packing.Rendezvous(str(tmp_path / "packed"))
  packed = rv.run([_point(p, data, str(tmp_path / f"p{i}")) for i, p in enumerate(POINTS)])
  assert all(err is None for _, err in packed), [err for _, err in packed]
  assert rv.programs == [6], "the three points x 2 seeds must run as ONE program"
  for a, (b, _) in zip(alone, packed):
    _assert_same(a, b)
  # Each point's metrics went to its own workdir; the points differ (their lrs differ).
  assert not np.array_equal(packed[0][0].params["head"]["kernel"], packed[1][0].params["head"]["kernel"])
  rows = [r for r in open(tmp_path / "p1" / "metrics.jsonl")]
  assert len(rows) == 2 * 2   # 2 seeds x 2 log steps (8 steps: 64/16 x 2 epochs, logged every 4)


def test_incompatible_points_run_as_separate_programs(data):
  other = dict(cfg=dict(batch_size=32), model=dict(init_scale=1.0), label_seed=0)
  rv = packing.Rendezvous(None)
  out = rv.run([_point(POINTS[0], data), _point(other, data)])
  assert [err for _, err in out] == [None, None]
  assert rv.programs == [2, 2]
  _assert_same(out[1][0], _point(other, data)())


def test_packed_run_resumes_from_its_checkpoint(data, tmp_path):
  fns = lambda: [_point(p, data, str(tmp_path / f"p{i}")) for i, p in enumerate(POINTS)]
  first = packing.Rendezvous(str(tmp_path / "packed")).run(fns())
  rv = packing.Rendezvous(str(tmp_path / "packed"))
  again = rv.run(fns())
  for (a, _), (b, _) in zip(first, again):
    _assert_same(a, b)
    assert len(b.metrics) == len(a.metrics)


def test_compatible_checks_program_fields():
  m = models.DenseNet(widths=(8,), num_classes=3)
  assert packing.program_model(m) == packing.program_model(m.clone(init_scale=0.3))
  assert packing.program_model(m) != packing.program_model(m.clone(widths=(9,)))
