"""Tests of benchmarks/roofline.py: the pure parts against hand counts (no timing asserts)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import roofline
from benchmarks import train_throughput
from rl_align import models


def test_flops_of_a_dense_net_step_equal_the_hand_count():
  # 30 -> 16 -> 4, batch 8: forward (2 matmuls), weight gradients (2), input gradient of layer 2.
  # The step is the one train_throughput's naive arm times and counts (SGD + momentum, batch
  # gathered by index: neither adds a dot).
  b = 8
  model = models.DenseNet(widths=(16,), num_classes=4)
  tx, step = train_throughput.naive_step_fn(model)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 30)))["params"]
  args = (
    params,
    jax.eval_shape(tx.init, params),
    jnp.ones((b, 30)),
    jnp.zeros(b, jnp.int32),
    jnp.arange(b, dtype=jnp.int32),
  )
  jaxpr = jax.make_jaxpr(step)(*args)
  # (train_throughput's jaxpr_dot_conv_flops_per_model_step is this counter.)
  assert roofline.dot_conv_flops(jaxpr) == 2 * b * (30 * 16 + 16 * 4) * 2 + 2 * b * 16 * 4


def test_flops_of_a_conv_equal_the_hand_count_and_scan_bodies_count_per_step():
  x = jnp.ones((2, 6, 6, 3))
  k = jnp.ones((3, 3, 3, 5))
  conv = lambda x, k: jax.lax.conv_general_dilated(
    x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  one = 2 * 2 * 4 * 4 * 5 * (3 * 3 * 3)  # 2 x batch x output positions x F x k*k*C
  assert roofline.dot_conv_flops(jax.make_jaxpr(conv)(x, k)) == one
  looped = lambda x, k: jax.lax.scan(lambda c, _: (c, conv(x, k)), 0.0, None, length=7)[1]
  assert roofline.dot_conv_flops(jax.make_jaxpr(looped)(x, k)) == 7 * one


def test_activation_and_patch_elements_of_the_paper_cnn():
  model = models.PaperCNN(features=8, hidden=16)
  assert roofline.activation_elements(model, (10, 10, 3)) == {"conv_0": 8 * 8 * 8, "dense_0": 16}
  assert roofline.patch_elements(model, (10, 10, 3)) == 3 * 3 * 3 * 8 * 8
  dense = models.DenseNet(widths=(32, 8))
  assert roofline.activation_elements(dense, (5,)) == {"dense_0": 32, "dense_1": 8}
  assert roofline.patch_elements(dense, (5,)) == 0


def test_step_bytes_count_every_kind_by_hand():
  b = roofline.step_bytes(
    n_params=1000,
    batch=4,
    input_elements=10,
    activation_elements=50,
    act_bytes=2,
    opt_slots=1,
    patch_elements=7,
  )
  assert b["parameters"] == 2 * 1000 * 4 and b["gradients"] == 2 * 1000 * 4
  assert b["optimizer"] == 2 * 2 * 1000 * 4  # params + momentum, read + written
  assert b["parameters"] + b["gradients"] + b["optimizer"] == 32 * 1000  # 32 B per parameter
  assert b["inputs"] == 4 * (10 * 4 + 4)
  assert b["activations"] == 5 * 4 * 50 * 2 and b["patches"] == 3 * 4 * 7 * 2
  assert b["total"] == sum(v for k, v in b.items() if k != "total")
  f32 = roofline.step_bytes(1000, 4, 10, 50, act_bytes=4, opt_slots=2)
  assert f32["activations"] == 2 * b["activations"] and f32["optimizer"] == 3 * 2 * 1000 * 4


def test_floor_is_the_binding_limit_and_the_fraction_its_share():
  f = roofline.floor(flops=1e10, n_bytes=1e9, peak_flops_per_s=1e14, bytes_per_s=1e12)
  assert f["bound"] == "memory" and f["seconds"] == f["memory_s"] == pytest.approx(1e-3)
  assert f["compute_s"] == pytest.approx(1e-4) and f["arithmetic_intensity"] == 10
  c = roofline.floor(flops=1e12, n_bytes=1e6, peak_flops_per_s=1e14, bytes_per_s=1e12)
  assert c["bound"] == "compute" and c["seconds"] == pytest.approx(1e-2)
  assert roofline.fraction_of_floor(4e-2, c["seconds"]) == pytest.approx(0.25)
  r = roofline.row(4e-2, 1e12, {"total": 1e6}, 1e14, 1e12)
  assert r["fraction_of_floor"] == pytest.approx(0.25) and r["bound"] == "compute"


def test_measurements_run_and_are_positive():
  # Timed on this machine: only their sanity is checked (no timing threshold).
  for value in (
    roofline.measure_matmul_peak(64, "float32", reps=1),
    roofline.measure_matmul_peak(64, "bfloat16", reps=1),
    roofline.measure_bandwidth(2**16, reps=1),
  ):
    assert np.isfinite(value) and value > 0
