"""Tests of rl_align.activity: ReLU activity stats with known answers, and inside the engine."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl_align import activity, errors, seeds, train
from rl_align.engine import config as engine_config
from tests.tolerances import f32_tol

# Fractions are float32 means of booleans: an exact integer count, one rounding in the division.
_FRACTION = float(f32_tol(1.0, 1))


class HandNet(nn.Module):
  """Dense 3 -> 3 (ReLU) -> conv-free head; sows its ReLU outputs like rl_align.models."""

  num_classes: int = 2

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(3, name="dense_0")(x.reshape(x.shape[0], -1)))
    self.sow("intermediates", "dense_0_relu", h)
    return nn.Dense(self.num_classes, name="head")(h)


class HandCNN(nn.Module):
  num_classes: int = 2

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(2, (1, 1), name="conv_0")(x))
    self.sow("intermediates", "conv_0_relu", h)
    return nn.Dense(self.num_classes, name="head")(h.reshape(h.shape[0], -1))


def hand_acts(model, params, x):
  _, state = model.apply({"params": params}, x, mutable=["intermediates"])
  return {k[: -len("_relu")]: {"relu": v[0]} for k, v in state["intermediates"].items()}


def _hand_params(bias):
  return {
    "dense_0": {"kernel": jnp.eye(3), "bias": jnp.asarray(bias, jnp.float32)},
    "head": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)},
  }


def test_unit_activity_on_a_hand_array():
  relu = np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 0.5]])
  s = {k: float(v) for k, v in activity.unit_activity(relu).items()}
  assert s["active_fraction"] == pytest.approx(3 / 6, rel=_FRACTION)
  assert s["dead_fraction"] == pytest.approx(1 / 3, rel=_FRACTION)  # unit 0 never fires
  # A float32 mean of 6 non-negative values: relative to itself (tests/tolerances.py).
  assert s["mean_activation"] == pytest.approx(3.5 / 6, rel=f32_tol(1.0, 6 + 1))


def test_identity_layer_on_positive_inputs_is_all_active_and_bias_kills_a_unit():
  x = np.abs(np.random.default_rng(0).normal(size=(5, 3))).astype(np.float32) + 0.1
  live = activity.probe_metrics(HandNet(), _hand_params([0, 0, 0]), x, activations_fn=hand_acts)
  assert float(live["dense_0/active_fraction"]) == 1.0
  assert float(live["dense_0/dead_fraction"]) == 0.0
  # x @ I + 0 is exact; then two float32 means of 15 positive values, any order.
  np.testing.assert_allclose(
    float(live["dense_0/mean_activation"]), x.mean(), rtol=f32_tol(1.0, 15 + 1)
  )
  dead = activity.probe_metrics(HandNet(), _hand_params([0, -1e3, 0]), x, activations_fn=hand_acts)
  assert float(dead["dense_0/dead_fraction"]) == pytest.approx(1 / 3, rel=_FRACTION)
  assert float(dead["dense_0/active_fraction"]) == pytest.approx(2 / 3, rel=_FRACTION)


def test_conv_unit_is_a_channel_dead_only_if_silent_at_every_position():
  x = np.zeros((2, 2, 2, 1), np.float32)
  x[0, 0, 0, 0] = 1.0  # one positive pixel in one image
  params = {
    "conv_0": {
      "kernel": np.array([1.0, -1.0], np.float32).reshape(1, 1, 1, 2),
      "bias": np.zeros(2, np.float32),
    },
    "head": {"kernel": np.zeros((8, 2), np.float32), "bias": np.zeros(2, np.float32)},
  }
  s = activity.probe_metrics(HandCNN(), params, x, activations_fn=hand_acts)
  assert float(s["conv_0/dead_fraction"]) == pytest.approx(
    0.5, rel=_FRACTION
  )  # channel 1 never > 0
  assert float(s["conv_0/active_fraction"]) == pytest.approx(1 / 16, rel=_FRACTION)


def test_probe_is_jittable_and_errors_are_clear():
  x = np.ones((4, 3), np.float32)
  probe = activity.make_probe_fn(x, activations_fn=hand_acts)
  out = jax.jit(lambda p: probe(HandNet(), p))(_hand_params([0, -1e3, 0]))
  assert set(out) == {f"dense_0/{s}" for s in activity.STATS}
  with pytest.raises(errors.ConfigError, match="dense_0"):
    activity.probe_metrics(
      HandNet(), _hand_params([0, 0, 0]), x, layers=["nope"], activations_fn=hand_acts
    )
  with pytest.raises(errors.DataError, match="NaN"):
    activity.make_probe_fn(np.full((2, 3), np.nan, np.float32))


def test_probe_fn_inside_the_engine_logs_every_layer_and_curves_parse():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 3)).astype(np.float32)
  cfg = engine_config.default_config()
  cfg.num_seeds, cfg.num_steps, cfg.batch_size, cfg.eval_every_steps = 2, 6, 16, 3
  cfg.log_every_steps, cfg.train_eval_examples = 3, 32
  labels = seeds.random_labels(0, range(2), 64, 2)
  res = train.train(
    HandNet(), cfg, x, labels, probe_fn=activity.make_probe_fn(x[:8], activations_fn=hand_acts)
  )
  rows = [r for r in res.metrics if "probe/dense_0/active_fraction" in r]
  assert sorted({r["step"] for r in rows}) == [3, 6]
  for r in rows:
    for s in activity.STATS:
      assert np.isfinite(r[f"probe/dense_0/{s}"])
  c = activity.curves_from_metrics(res.metrics)
  assert list(c) == ["dense_0"]
  assert c["dense_0"]["active_fraction"].shape == (2, 2)
  np.testing.assert_array_equal(c["dense_0"]["steps"], [3, 6])
  # The logged value equals a direct measurement on the final params.
  direct = activity.measure(HandNet(), res.params, x[:8], activations_fn=hand_acts)
  # The same count of positive units (k / 24) from two programs: only the division rounds.
  np.testing.assert_allclose(
    c["dense_0"]["active_fraction"][:, -1], direct["dense_0"]["active_fraction"], rtol=_FRACTION
  )
