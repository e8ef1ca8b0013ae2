"""Tests of rl_align.models: shapes, init statistics, im2col == lax, activations, build."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from rl_align import errors, models
from tests.tolerances import assert_close, f32_tol, f64_tol, sampling_tol

# Sampling bounds (5 sigma, tests/tolerances.py) for the init statistics below, n iid draws: the
# sample std of a normal has relative std sqrt(1 / (2n)) (kurtosis 3); of a uniform sqrt(0.8 / (4n))
# (kurtosis 1.8); the sample mean has std sigma / sqrt(n).
_NORMAL_STD, _UNIFORM_STD = np.sqrt(0.5), np.sqrt(0.8) / 2

# name -> (tiny config, input shape, expected layer names)
TINY = {
  "dense": ({"widths": (8, 4)}, (2, 3, 3), ["dense_0", "dense_1", "head"]),
  "paper_cnn": ({"features": 4, "hidden": 5}, (2, 6, 6, 3), ["conv_0", "dense_0", "head"]),
  "small_cnn": ({}, (2, 6, 6, 3), ["conv_0", "conv_1", "head"]),
  "vgg16": ({"width": 4}, (2, 32, 32, 3), [f"conv_{i}" for i in range(13)] + ["head"]),
  "resnet18": (
    {"width": 4},
    (2, 8, 8, 3),
    [
      "conv_0",
      "conv_1",
      "conv_2",
      "conv_3",
      "conv_4",
      "conv_5",
      "conv_5_shortcut",
      "conv_6",
      "conv_7",
      "conv_8",
      "conv_9",
      "conv_9_shortcut",
      "conv_10",
      "conv_11",
      "conv_12",
      "conv_13",
      "conv_13_shortcut",
      "conv_14",
      "conv_15",
      "conv_16",
      "head",
    ],
  ),
  "wrn": (
    {"depth": 10, "width": 2, "residual_init_scale": 0.5},
    (2, 8, 8, 3),
    [
      "conv_0",
      "conv_1",
      "conv_1_shortcut",
      "conv_2",
      "conv_3",
      "conv_3_shortcut",
      "conv_4",
      "conv_5",
      "conv_5_shortcut",
      "conv_6",
      "head",
    ],
  ),
}


def _init(model, shape, seed=0):
  # "rbg" keys compile ~5x faster than threefry on XLA:CPU (the residual nets' init dominates the
  # runtime of this file otherwise); the statistics tested do not depend on the key kind.
  key = jax.random.key(seed, impl="rbg")
  return jax.jit(model.init)(key, jnp.zeros(shape, jnp.float32))["params"]


def _x(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@functools.lru_cache(maxsize=None)
def _built(name):
  """(model, params, x, activations) of a TINY model, built once for the whole file."""
  cfg, shape, _ = TINY[name]
  model = models.build({"name": name, "num_classes": 7, **cfg})
  params = _init(model, shape)
  x = _x(shape)
  acts = jax.jit(lambda p, x: models.activations(model, p, x))(params, x)  # jit re-sorts keys
  return model, params, x, acts


@pytest.fixture(params=sorted(TINY))
def tiny(request):
  return (request.param,) + _built(request.param)


def test_logit_shapes_and_layer_names(tiny):
  name, model, params, x, acts = tiny
  logits = jax.jit(model.apply)({"params": params}, x)
  assert logits.shape == (x.shape[0], 7)
  assert np.isfinite(np.asarray(logits)).all()
  assert models.layer_names(params) == TINY[name][2]
  assert models.first_layer_name(params) == TINY[name][2][0]
  # The engine's default snapshot takes the first params entry: it must be the first layer.
  assert next(iter(params)) == TINY[name][2][0]


def test_activations_cover_every_layer_in_forward_order(tiny):
  name, model, params, x, acts = tiny
  assert models.sort_layers(acts) == models.layer_names(params)
  first_inputs = acts[TINY[name][2][0]]["inputs"]
  np.testing.assert_array_equal(first_inputs, x.reshape(first_inputs.shape))  # dense: flattened
  assert "relu" not in acts["head"]
  assert acts["head"]["inputs"].shape == (x.shape[0], params["head"]["kernel"].shape[0])
  for layer, a in acts.items():
    kernel = params[layer]["kernel"]
    assert a["inputs"].shape[-1] == kernel.shape[-2], layer
    if "relu" in a:
      assert a["relu"].shape[-1] == kernel.shape[-1], layer
      assert float(a["relu"].min()) >= 0.0, layer
      assert float(a["relu"].max()) > 0.0, layer
    else:
      assert layer == "head" or layer.endswith("_shortcut"), layer


def test_first_layer_kernel_with_and_without_seed_axis(tiny):
  name, _, params, _, _ = tiny
  k = models.first_layer_kernel(params)
  assert k is params[TINY[name][2][0]]["kernel"]
  stacked = jax.tree.map(lambda a: np.stack([a, 2 * a]), params)  # re-sorts dict keys
  np.testing.assert_array_equal(models.first_layer_kernel(stacked)[1], 2 * k)
  assert models.layer_names(stacked) == TINY[name][2]


def test_activations_dict_in_forward_order():
  model, x = models.DenseNet(widths=(2,) * 11), jnp.ones((1, 3))
  order = []

  def trace(key):  # abstract evaluation: the dict order as returned, nothing compiled
    params = model.init(key, x)["params"]
    order.extend(models.activations(model, params, x))

  jax.eval_shape(trace, jax.random.key(0))
  assert order == [f"dense_{i}" for i in range(11)] + ["head"]  # dense_2 before dense_10


def test_is_conv_model_matches_engine_test():
  assert not models.is_conv_model(models.DenseNet())
  assert not hasattr(models.DenseNet(), "conv_impl")  # engine.layout.choose_layout keys on this
  for name in ("paper_cnn", "small_cnn", "vgg16", "resnet18", "wrn"):
    assert models.is_conv_model(models.build({"name": name}))


# ----------------------------------------------------------------------------------------------
# Initialization.


def _first_kernel(model, shape):
  return np.asarray(models.first_layer_kernel(_init(model, shape)), np.float64)


@pytest.mark.parametrize("init,var", [("lecun_normal", 1.0), ("he_normal", 2.0)])
def test_normal_init_variance_untruncated(init, var):
  w = _first_kernel(models.DenseNet(widths=(512,), kernel_init=init), (1, 256))  # 131k samples
  std = np.sqrt(var / 256)
  assert abs(w.std() / std - 1) < sampling_tol(_NORMAL_STD, w.size)  # 0.0098
  assert abs(w.mean()) < sampling_tol(std, w.size)
  # Flax's truncated normals stop at 2 std; P(max of 131k normals < 3.5 std) ~ exp(-61).
  assert np.abs(w).max() > 3.5 * std


def test_conv_fan_in_counts_patch_size():
  w = _first_kernel(models.PaperCNN(features=512, hidden=2, kernel_size=3), (1, 4, 4, 16))
  assert abs(w.std() * np.sqrt(3 * 3 * 16) - 1) < sampling_tol(_NORMAL_STD, w.size)  # 0.013


def test_uniform_init_is_bounded_with_lecun_variance():
  w = _first_kernel(models.DenseNet(widths=(512,), kernel_init="uniform"), (1, 256))
  std = np.sqrt(1 / 256)
  assert abs(w.std() / std - 1) < sampling_tol(_UNIFORM_STD, w.size)  # 0.0062
  # The float32 bound sqrt(3) * std: a couple of roundings.
  assert np.abs(w).max() <= np.sqrt(3) * std * (1 + f32_tol(1.0, 2))


def test_first_layer_std_is_absolute():
  model = models.PaperCNN(features=256, hidden=4, first_layer_std=0.002, init_scale=5.0)
  params = _init(model, (1, 5, 5, 3))
  w = np.asarray(params["conv_0"]["kernel"], np.float64)
  assert abs(w.std() / 0.002 - 1) < sampling_tol(_NORMAL_STD, w.size)  # 6912 draws: 0.043
  d = np.asarray(params["dense_0"]["kernel"], np.float64)
  assert abs(d.std() * np.sqrt(3 * 3 * 256) / 5.0 - 1) < sampling_tol(_NORMAL_STD, d.size)


def test_init_scale_scales_every_kernel_and_first_layer_overrides():
  base = _init(models.DenseNet(widths=(16, 8)), (1, 4))
  scaled = _init(
    models.DenseNet(
      widths=(16, 8), init_scale=0.5, first_layer_scale=3.0, first_layer_init="he_normal"
    ),
    (1, 4),
  )  # same key, same draws
  # The same normal draws times float32 scales: a few roundings per entry.
  for name in ("dense_1", "head"):
    np.testing.assert_allclose(
      scaled[name]["kernel"], 0.5 * base[name]["kernel"], rtol=f32_tol(1.0, 2)
    )
    np.testing.assert_array_equal(scaled[name]["bias"], 0.0)
  np.testing.assert_allclose(
    scaled["dense_0"]["kernel"], 3.0 * np.sqrt(2) * base["dense_0"]["kernel"], rtol=f32_tol(1.0, 4)
  )


def test_first_kernel_init_overrides_everything():
  seen = []

  def const(key, shape, dtype=jnp.float32):
    seen.append(tuple(shape))
    return jnp.full(shape, 0.125, dtype)

  model = models.PaperCNN(
    features=6, hidden=4, kernel_size=3, first_layer_std=1.0, first_kernel_init=const
  )
  params = _init(model, (1, 5, 5, 2))
  np.testing.assert_array_equal(params["conv_0"]["kernel"], 0.125)
  assert seen == [(3, 3, 2, 6)]
  assert not np.allclose(params["dense_0"]["kernel"], 0.125)


def test_make_initializer():
  w = np.asarray(
    models.make_initializer("lecun_normal", 2.0)(jax.random.key(0), (400, 300)), np.float64
  )
  assert abs(w.std() * np.sqrt(400) / 2.0 - 1) < sampling_tol(_NORMAL_STD, w.size)  # 0.010
  with pytest.raises(errors.ConfigError, match="glorot.*lecun_normal"):
    models.make_initializer("glorot", 1.0)


# ----------------------------------------------------------------------------------------------
# im2col == lax.


@pytest.mark.parametrize(
  "stride,padding,k", [(1, "VALID", 3), (2, "SAME", 3), (2, "VALID", 1), (1, "SAME", 5)]
)
def test_conv_im2col_equals_lax(stride, padding, k):
  x = _x((2, 7, 8, 3))
  conv = models.Conv(5, k, stride, padding, "lax")
  params = {"params": {"kernel": _x((k, k, 3, 5), seed=2), "bias": _x((5,), seed=3)}}
  y_lax = conv.apply(params, x)
  y_col = conv.clone(impl="im2col").apply(params, x)
  assert y_lax.shape == y_col.shape
  # Two float32 sums of k*k*3 products plus the bias, any order: bounded by the conv of |x| with
  # |kernel| + |bias| (tests/tolerances.py).
  mag = conv.apply(jax.tree.map(jnp.abs, params), jnp.abs(x))
  assert_close(y_col, y_lax, f32_tol(mag, k * k * 3 + 1), "im2col vs lax")


@pytest.mark.parametrize("name", ["paper_cnn", "small_cnn"])  # residual convs: test above
def test_model_im2col_equals_lax_with_same_params(name):
  model, params, x, _ = _built(name)
  params = jax.tree.map(lambda a: np.asarray(a) + 0.01, params)  # non-zero biases too
  # float64 (in float32 the bound below is 2% of small_cnn's logits): the model on |x| and
  # |params| bounds sum |term| along the chain (ReLU is the identity there); the chain: every
  # layer's fan-in, small_cnn's 6x6 average pool, 2 elementwise ops per layer (tests/tolerances.py).
  with jax.enable_x64(True):
    params, x = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (params, x))
    y_lax = jax.jit(model.apply)({"params": params}, x)
    y_col = jax.jit(model.clone(conv_impl="im2col").apply)({"params": params}, x)
    assert y_lax.dtype == y_col.dtype == jnp.float64
    mag = jax.jit(model.apply)({"params": jax.tree.map(jnp.abs, params)}, jnp.abs(x))
  kernels = [np.shape(p["kernel"]) for p in params.values()]
  chain = sum(int(np.prod(k[:-1])) for k in kernels) + 2 * len(kernels)
  chain += 36 if name == "small_cnn" else 0
  assert_close(y_col, y_lax, f64_tol(mag, chain), name)
  assert float(np.abs(np.asarray(y_lax)).max()) > 1e-3


# ----------------------------------------------------------------------------------------------
# Residual nets.


def test_zero_init_branch_makes_identity_blocks():
  _, params, _, acts = _built("resnet18")
  assert float(jnp.abs(params["conv_2"]["kernel"]).max()) == 0.0
  assert float(jnp.abs(params["conv_1"]["kernel"]).max()) > 0.0  # the branch itself is random
  # Block conv_1/conv_2 has an identity shortcut: its output equals its (post-ReLU) input.
  np.testing.assert_array_equal(acts["conv_2"]["relu"], acts["conv_1"]["inputs"])


def test_residual_init_scale_scales_last_conv_of_each_branch():
  _, params, _, _ = _built("wrn")  # residual_init_scale=0.5
  he = lambda name: np.sqrt(2 / np.prod(params[name]["kernel"].shape[:-1]))
  for name, scale in [("conv_1", 1.0), ("conv_2", 0.5), ("conv_1_shortcut", 1.0), ("conv_4", 0.5)]:
    w = np.asarray(params[name]["kernel"], np.float64)
    # Sampling bound of a sample std (5 sigma); the smallest kernel (a 1x1 shortcut, 512 draws)
    # gives 0.16: scales 0.5 vs 1.0 still differ by 3x that.
    assert abs(w.std() / (scale * he(name)) - 1) < sampling_tol(_NORMAL_STD, w.size), name


def test_wrn_first_kernel_size_and_depth():
  params = jax.eval_shape(
    lambda: models.WRN().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  )
  assert params["conv_0"]["kernel"].shape == (5, 5, 3, 16)
  assert len([n for n in models.layer_names(params) if not n.endswith("_shortcut")]) == 26
  assert params["conv_24"]["kernel"].shape == (3, 3, 256, 256)
  with pytest.raises(errors.ConfigError, match="6n"):
    models.WRN(depth=12).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def test_vgg16_widen_from_widens_later_layers_only():
  params = jax.eval_shape(
    lambda: models.VGG16(width=128, widen_from=10).init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3))
    )["params"]
  )
  assert params["conv_9"]["kernel"].shape[-1] == 512
  assert params["conv_10"]["kernel"].shape[-1] == 1024
  assert params["head"]["kernel"].shape == (1024, 10)  # 1x1x1024 flattened, no avg pool / FC


def test_small_cnn_flops_match_design():
  model = models.SmallCNN()
  x, y = jnp.zeros((128, 32, 32, 3)), jnp.zeros(128, jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1])["params"])
  loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
    model.apply({"params": p}, x), y
  ).mean()
  flops = jax.jit(jax.grad(loss)).lower(params).cost_analysis()["flops"]
  # A count, not a rounded result: XLA versions count elementwise ops differently (11.9-14.9
  # GFLOP across variants, models.SmallCNN); 2% still pins the conv and matmul FLOPs.
  assert abs(flops / 14.45e9 - 1) < 0.02


# ----------------------------------------------------------------------------------------------
# build.


def test_build_from_config_dict():
  cfg = ml_collections.ConfigDict(
    {"name": "dense", "widths": [4, 3], "num_classes": 5, "first_layer_std": None}
  )
  model = models.build(cfg)
  assert isinstance(model, models.DenseNet) and model.widths == (4, 3) and model.num_classes == 5
  assert set(models.MODELS) == {"dense", "paper_cnn", "small_cnn", "vgg16", "resnet18", "wrn"}


@pytest.mark.parametrize(
  "cfg,match",
  [
    ({"name": "mlp"}, r"'mlp'.*dense.*wrn"),
    ({"widths": (3,)}, r"None.*dense"),
    ({"name": "dense", "features": 3}, r"\['features'\].*widths"),
    ({"name": "paper_cnn", "kernel_init": "glorot"}, r"kernel_init.*lecun_normal"),
    ({"name": "vgg16", "first_layer_init": "xavier"}, r"first_layer_init.*he_normal"),
    ({"name": "small_cnn", "conv_impl": "fft"}, r"conv_impl.*im2col"),
    ({"name": "paper_cnn", "first_layer_std": -1.0}, r"first_layer_std"),
  ],
)
def test_build_errors(cfg, match):
  with pytest.raises(errors.ConfigError, match=match):
    models.build(cfg)


def test_first_layer_name_error_and_natural_sort():
  with pytest.raises(errors.ConfigError, match="no layer with a kernel"):
    models.first_layer_name({"scale": jnp.ones(2)})
  assert models.sort_layers(["head", "conv_10", "dense_0", "conv_2_shortcut", "conv_2"]) == [
    "conv_2",
    "conv_2_shortcut",
    "conv_10",
    "dense_0",
    "head",
  ]
