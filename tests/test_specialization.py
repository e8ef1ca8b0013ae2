"""Tests of rl_align.specialization and the `experiments.specialization` binary (tiny, subprocess)."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rl_align import activity, errors, models, specialization
from tests.helpers import run_module
from tests.tolerances import f32_tol, f64_tol

# Hand-made curves: interpolated iterations, ratios and means of a few float64 values.
_F64_FEW = float(f64_tol(1.0, 8))


def test_gain_is_scratch_over_arm_iterations_with_censoring():
  steps = np.array([0, 10, 20, 30, 40])
  scratch = np.array([[0.1, 0.3, 0.5, 0.7, 0.9]] * 2)  # reaches 0.5 at step 20
  fast = np.array([[0.1, 0.5, 0.7, 0.8, 0.9]] * 2)  # at step 10
  g = specialization.gain_stats(steps, scratch, fast, 0.5)
  assert g["gain"] == pytest.approx(2.0, rel=_F64_FEW)
  assert g["censored"] == "none" and g["gain_ci"] == pytest.approx([2.0, 2.0], rel=_F64_FEW)
  assert g["auc_difference"] > 0
  never = np.array([[0.1, 0.2, 0.2, 0.3, 0.4], [0.1, 0.5, 0.6, 0.6, 0.6]])
  g = specialization.gain_stats(steps, scratch, never, 0.5)
  assert np.isnan(g["gain"]) and g["censored"] == "upper_bound"
  assert g["reached"] == 0.5
  assert g["gain_censored"] == pytest.approx(20 / 25, rel=_F64_FEW)  # seed 0 counted at 40 steps


def test_gain_leaves_diverged_seeds_out_and_reports_when_none_finished():
  steps = np.array([0, 10, 20, 30, 40])
  scratch = np.array([[0.1, 0.3, 0.5, 0.7, 0.9]] * 2)
  arm = np.array([[0.1, 0.5, 0.7, 0.8, 0.9], [0.1, 0.1, 0.1, 0.1, 0.1]])  # seed 1 diverged
  g = specialization.gain_stats(steps, scratch, arm, 0.5, diverged_arm=[False, True])
  alone = specialization.gain_stats(steps, scratch, arm[:1], 0.5)
  for k in (
    "gain",
    "gain_censored",
    "censored",
    "gain_ci",
    "gain_seed_std",
    "reached",
    "auc_difference",
  ):
    assert g[k] == alone[k], k
  assert len(g["gain_seeds"]) == len(g["iterations"]) == 2  # per-seed arrays keep every seed
  none = specialization.gain_stats(steps, scratch, arm, 0.5, diverged_scratch=[True, True])
  assert np.isnan(none["gain"]) and "all 2 seeds diverged" in none["error"]
  assert specialization.gain_text(none) == "div"


def test_activity_drop_takes_the_minimum_in_the_window():
  steps = np.array([0, 5, 10, 15, 30])
  after = np.array([[0.4, 0.2, 0.3, 0.35, 0.0], [0.4, 0.3, 0.1, 0.4, 0.0]])
  d = specialization.activity_drop(steps, after, after[:, 0], window=15)
  assert d["before"] == pytest.approx(0.4, rel=_F64_FEW)
  assert d["after"] == pytest.approx(0.15, rel=_F64_FEW)  # minima 0.2 and 0.1; step 30 is outside
  assert d["relative_drop"] == pytest.approx(0.25 / 0.4, rel=_F64_FEW)
  with pytest.raises(errors.ConfigError, match="drop_window"):
    specialization.activity_drop(steps, after, after[:, 0], window=2)


def test_with_width_replaces_the_later_layers_only():
  m = ml_collections.ConfigDict({"name": "dense", "widths": (256, 32, 32), "num_classes": 10})
  assert specialization.with_width(m, "widths", 1, 8).widths == (256, 8, 8)
  assert m.widths == (256, 32, 32)  # not mutated
  assert specialization.with_width(m, "num_classes", 0, 3).num_classes == 3
  with pytest.raises(errors.ConfigError, match="width_field"):
    specialization.with_width(m, "width", 0, 8)
  with pytest.raises(errors.ConfigError, match="width_from"):
    specialization.with_width(m, "widths", 3, 8)


def _stacked_params(seed, s=2, widths=(5, 4)):
  model = models.DenseNet(widths=widths, num_classes=3)
  keys = jax.random.split(jax.random.key(seed), s)
  return jax.tree.map(
    np.asarray, jax.vmap(lambda k: model.init(k, jnp.zeros((1, 6)))["params"])(keys)
  )


def test_transfer_init_carries_hidden_layers_and_takes_a_fresh_head():
  at_init, fresh = _stacked_params(0), _stacked_params(1)
  trained = jax.tree.map(lambda a: 3.0 * a + 0.1, _stacked_params(2))
  pre = specialization.transfer_init(trained, fresh)
  np.testing.assert_array_equal(pre["dense_1"]["kernel"], trained["dense_1"]["kernel"])
  np.testing.assert_array_equal(pre["head"]["kernel"], fresh["head"]["kernel"])
  res = specialization.transfer_init(trained, fresh, at_init)
  np.testing.assert_array_equal(res["head"]["kernel"], fresh["head"]["kernel"])
  for s in range(2):
    for layer in ("dense_0", "dense_1"):
      k, k0, kt = (np.asarray(t[layer]["kernel"][s], np.float64) for t in (res, at_init, trained))
      # float32 rescaling by a ratio of float32 norms (sums of n squares: relative n u each),
      # one multiply per entry; the test's norms are float64.
      rel = f32_tol(1.0, k.size + 3)
      assert np.linalg.norm(k) == pytest.approx(np.linalg.norm(k0), rel=rel)
      np.testing.assert_allclose(k / np.linalg.norm(k), kt / np.linalg.norm(kt), rtol=2 * rel)


def _run_binary(workdir, *extra):
  return run_module(
    "experiments.specialization",
    "--config=experiments/configs/specialization.py:tiny",
    f"--workdir={workdir}",
    *extra,
    timeout=300,
  )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("spec"))
  proc = _run_binary(wd)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(wd, "results.json")) as f:
    return wd, json.load(f), proc.stdout


@pytest.mark.slow
def test_binary_writes_the_documented_schema(tiny_run):
  wd, res, stdout = tiny_run
  assert "gain" in stdout
  for k in ("points", "layers", "later_layers", "threshold", "num_seeds", "highlight", "figures"):
    assert k in res
  # tiny: widths (8, 32) x lr (0.05) x K (3, 6) x L (10, 20) x arms (pretrained, rescaled).
  assert len(res["points"]) == 2 * 2 * 2 * 2
  assert res["highlight"]["negative"] == "w=8,lr=0.05,K=6,L=20,arm=pretrained"
  assert res["highlight"]["wide"] == "w=32,lr=0.05,K=6,L=20,arm=pretrained"
  p = res["points"][res["highlight"]["negative"]]
  assert p["switch_step"] == p["upstream_steps"] == 20
  assert len(p["gain_seeds"]) == res["num_seeds"] == 2
  assert set(p["activity"]) == set(res["layers"]) == {"dense_0", "dense_1", "dense_2"}
  for layer, curve in p["activity"].items():
    steps = np.asarray(curve["steps"])
    assert steps[0] == 0 and steps[-1] == 20 + 20 and 20 in steps
    assert np.all(np.diff(steps) > 0)
    for stat in activity.STATS:
      v = np.asarray(curve[stat], float)
      assert v.shape == steps.shape and np.all(np.isfinite(v)), (layer, stat)
    assert 0 <= curve["active_fraction"][0] <= 1
    assert set(p["activity_drop"][layer]) >= {"before", "after", "drop", "relative_drop"}
  for f in ("specialization_activity.png", "specialization_gain.png"):
    assert os.path.getsize(os.path.join(wd, f)) > 1000


@pytest.mark.slow
def test_rerun_resumes_and_reproduces(tiny_run):
  wd, res, _ = tiny_run
  cell = os.path.join(wd, "w=32_lr=0.05")
  os.remove(os.path.join(cell, "points.json"))  # this cell is rebuilt from its checkpoints
  os.remove(os.path.join(wd, "results.json"))
  proc = _run_binary(wd)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resumed from step" in proc.stderr
  with open(os.path.join(wd, "results.json")) as f:
    again = json.load(f)
  # Exact: the same programs on the same checkpoints and metrics (one machine).
  for pid, p in res["points"].items():
    np.testing.assert_array_equal(again["points"][pid]["gain_censored"], p["gain_censored"])
    np.testing.assert_array_equal(
      again["points"][pid]["activity"]["dense_1"]["active_fraction"],
      p["activity"]["dense_1"]["active_fraction"],
    )


@pytest.mark.slow  # reads the binary's tiny run
def test_rerun_with_another_config_is_refused(tiny_run, capsys):
  """In-process through the binary's entry (`cli.run_main`): exit code 2, one error line."""
  from experiments import cli  # pylint: disable=g-import-not-at-top
  from experiments.configs import specialization as configs  # pylint: disable=g-import-not-at-top
  from rl_align.runners import specialization as runner  # pylint: disable=g-import-not-at-top

  wd, _, _ = tiny_run
  config = configs.get_config("tiny")
  config.train.num_seeds = 3
  with pytest.raises(SystemExit) as e:
    cli.run_main(runner.run, config, wd, argv=["experiments/specialization.py", f"--workdir={wd}"])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("error: ") and "another config" in err[-1], err[-5:]


@pytest.mark.parametrize(
  "name", ["local", "vgg16_cifar10", "resnet18_cifar10", "resnet18_imagenet"]
)
def test_every_config_builds_its_models_and_validates(name):
  from experiments.configs import specialization as configs  # pylint: disable=g-import-not-at-top

  c = configs.get_config(name)
  specialization.validate(c)
  for w in c.sweep.widths:
    m = specialization.with_width(c.model, c.sweep.width_field, c.sweep.width_from, w)
    m.num_classes = max(c.sweep.num_random_classes)
    models.build(m)
  hl = c.highlight.negative
  assert hl.width in c.sweep.widths and c.highlight.wide_width in c.sweep.widths
  assert hl.learning_rate in c.sweep.learning_rates and hl.upstream_steps in c.sweep.upstream_steps
