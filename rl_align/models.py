"""Models: dense nets, the paper's 2-layer CNN, a small benchmark CNN, VGG16, ResNet18 and WRN.

Every model is a ``flax.linen`` Module mapping a batch to logits [B, num_classes] and owns ONLY the
``params`` collection (no BatchNorm, no dropout): the training engine handles params alone.  The
residual nets train without normalization by initializing the last conv of every residual branch
to ``residual_init_scale`` times its usual init (0 by default, "fixup-like"), so that every block
starts as relu(shortcut(x)) and the signal does not explode with depth.

Usage::

    from rl_align import models
    model = models.build({"name": "paper_cnn", "features": 256, "first_layer_std": 0.002})
    params = model.init(jax.random.key(0), x[:1])["params"]
    logits = model.apply({"params": params}, x)                 # [B, num_classes]
    models.layer_names(params)        # ["conv_0", "dense_0", "head"]  (forward order, kernels only)
    models.first_layer_kernel(params) # params["conv_0"]["kernel"]; also with a leading seed axis
    acts = models.activations(model, params, x)   # {"conv_0": {"inputs": ..., "relu": ...}, ...}

Layer names (all at the top level of the params dict; ``layer_names`` sorts them naturally, which
is the forward order; note that ``jax.tree`` operations re-sort dict keys alphabetically, so that
e.g. "conv_10" comes before "conv_2" there):

- ``DenseNet``: dense_0 .. dense_{n-1}, head.
- ``PaperCNN``: conv_0, dense_0, head.      ``SmallCNN``: conv_0, conv_1, head.
- ``VGG16``: conv_0 .. conv_12, head.
- ``ResNet18``: conv_0 (stem), conv_1 .. conv_16 (two per basic block), projection shortcuts
  conv_5_shortcut, conv_9_shortcut, conv_13_shortcut (named after the first conv of their block),
  head.
- ``WRN``: conv_0 (stem, ``first_kernel_size``), conv_1 .. conv_{2*3*n}, shortcuts
  conv_{k}_shortcut at the first block of each group, head.  n = (depth - 4) / 6.

Initialization (fields shared by every model, keyword-only):

- ``kernel_init``: "lecun_normal" (std sqrt(1/fan_in)), "he_normal" (std sqrt(2/fan_in)) or
  "uniform" (variance-scaling fan_in uniform with the LeCun variance).  The normals are NOT
  truncated (Flax's own lecun_normal/he_normal are): only an i.i.d. Gaussian init is rotation
  invariant, which the alignment theory (the proposition of Sec. 2 of the paper) needs.  "uniform" breaks that symmetry
  on purpose (a control).  Every kernel's init is multiplied by ``init_scale``; biases are zero.
- The first layer: ``first_layer_init`` (name, default kernel_init) times ``first_layer_scale``
  (default init_scale); ``first_layer_std`` (absolute normal std, Fig 4 uses 0.002) overrides
  both; ``first_kernel_init`` (a Flax initializer ``(key, shape, dtype)``, e.g. a covariance-aligned
  one from rl_align.init) overrides everything.

Activations: every layer with a kernel sows ``<layer>_inputs`` (its input) and, if a ReLU follows,
``<layer>_relu`` into the "intermediates" collection; ``activations`` collects them.  In a residual
block the second conv's "relu" is the block output relu(branch + shortcut); shortcuts and the head
have no "relu".

Convolutions: ``conv_impl="lax"`` uses ``lax.conv_general_dilated``; ``conv_impl="im2col"`` computes
every conv as ``covariance.extract_patches(x_padded, k) @ kernel.reshape(-1, F)`` (strided convs
subsample the stride-1 patches); ``conv_impl="fused"`` is im2col, and in `PaperCNN` the block
conv -> ReLU -> flatten -> dense runs as one cache-blocked op with its own backward pass
(`rl_align.fused`; 2-3x faster on XLA:CPU) unless intermediates are being collected;
``conv_impl="pallas"`` is the same with that block as Pallas kernels for accelerators
(`rl_align.pallas_fused`: the [N, H', W', F] activation never reaches device memory; on CPU it runs
in Pallas interpret mode, for tests only).  All four have the same params, so params are
interchangeable.  A model is a conv model iff it has a ``conv_impl`` field (``is_conv_model``; the
engine uses the same test).

Mixed precision: ``dtype="bfloat16"`` (every model, keyword-only; default "float32") computes the
activations and matmuls / convolutions in bfloat16 while the parameters (and so the gradients and
optimizer state) stay float32 (Flax's ``dtype`` vs ``param_dtype``); the logits come back as
float32, so the loss is computed in float32.  Sown intermediates are float32 too.  It pays only
on accelerators with bfloat16 matmul units; on CPU it is not faster.
"""

import dataclasses
import re
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from rl_align import covariance
from rl_align import errors
from rl_align import fused
from rl_align import pallas_fused

Initializer = Callable[..., jax.Array]

INITS = ("lecun_normal", "he_normal", "uniform")
CONV_IMPLS = ("lax", "im2col", "fused", "pallas")
DTYPES = ("float32", "bfloat16")
_INTERMEDIATES = "intermediates"
_SUFFIXES = ("_inputs", "_relu")
_VGG16_PLAN = (
  64,
  64,
  "M",
  128,
  128,
  "M",
  256,
  256,
  256,
  "M",
  512,
  512,
  512,
  "M",
  512,
  512,
  512,
  "M",
)


# ----------------------------------------------------------------------------------------------
# Initializers.


def make_initializer(name: str, scale: float = 1.0) -> Initializer:
  """A Flax initializer `(key, shape, dtype)` for kernel init `name` (INITS) times `scale`.

  fan_in is the product of every axis but the last (k*k*C_in for a conv kernel [k, k, C_in, F]).
  """
  variance = {"lecun_normal": 1.0, "he_normal": 2.0, "uniform": 1.0}
  if name not in variance:
    raise errors.ConfigError(f"unknown kernel init {name!r}. Fix: use one of {INITS}.")
  dist = "uniform" if name == "uniform" else "normal"
  return nn.initializers.variance_scaling(
    variance[name] * float(scale) ** 2, "fan_in", dist, in_axis=-2, out_axis=-1
  )


def _scaled(init: Initializer, scale: float) -> Initializer:
  def scaled_init(key, shape, dtype=jnp.float32):
    return scale * init(key, shape, dtype)

  return scaled_init


# ----------------------------------------------------------------------------------------------
# Layers.


def _same_pads(size: Sequence[int], k: int, stride: int) -> list[tuple[int, int]]:
  """XLA's SAME padding (low, high) per spatial axis."""
  return list(lax.padtype_to_pads(tuple(size), (k, k), (stride, stride), "SAME"))


def conv_im2col(x, kernel, stride: int = 1):
  """VALID conv of x [N, H, W, C] with a Flax kernel [k, k, C, F] as patches @ kernel (im2col)."""
  k, f = kernel.shape[0], kernel.shape[-1]
  n, h, w, _ = x.shape
  ho, wo = h - k + 1, w - k + 1
  patches = covariance.extract_patches(x, k).reshape(n, ho, wo, -1)
  if stride > 1:
    patches = patches[:, ::stride, ::stride]
  return patches @ kernel.reshape(-1, f)


class Conv(nn.Module):
  """A square conv with params {"kernel": [k, k, C, F], "bias": [F]} (float32), lax or im2col,
  computed in `dtype`."""

  features: int
  kernel_size: int = 3
  stride: int = 1
  padding: str = "VALID"  # VALID | SAME (XLA's SAME pads; im2col pads explicitly)
  impl: str = "lax"
  kernel_init: Initializer = make_initializer("lecun_normal")
  dtype: Any = None  # the compute dtype; None: the inputs' (as lax does)

  @nn.compact
  def __call__(self, x):
    if self.impl not in CONV_IMPLS:
      raise errors.ConfigError(f"conv_impl={self.impl!r} is unknown. Fix: use one of {CONV_IMPLS}.")
    k, s = self.kernel_size, self.stride
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    pads = _same_pads(x.shape[1:3], k, s) if self.padding == "SAME" else [(0, 0), (0, 0)]
    if self.dtype is not None:
      x, bias = x.astype(self.dtype), bias.astype(self.dtype)
    kernel = kernel.astype(x.dtype)
    if self.impl in ("im2col", "fused", "pallas"):
      y = conv_im2col(jnp.pad(x, [(0, 0)] + pads + [(0, 0)]), kernel, s)
    else:
      y = lax.conv_general_dilated(
        x, kernel, (s, s), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
    return y + bias


class _Base(nn.Module):
  """Init fields (keyword-only) and layer helpers shared by every model."""

  kernel_init: str = dataclasses.field(default="lecun_normal", kw_only=True)
  init_scale: float = dataclasses.field(default=1.0, kw_only=True)
  first_layer_init: str | None = dataclasses.field(default=None, kw_only=True)
  first_layer_scale: float | None = dataclasses.field(default=None, kw_only=True)
  first_layer_std: float | None = dataclasses.field(default=None, kw_only=True)
  first_kernel_init: Initializer | None = dataclasses.field(default=None, kw_only=True)
  dtype: str = dataclasses.field(default="float32", kw_only=True)

  @property
  def compute_dtype(self):
    """The activations' and matmuls' dtype for `dtype="bfloat16"`; None for "float32", meaning
    the inputs' dtype, untouched (float32 data; float64 when a test enables x64)."""
    if self.dtype not in DTYPES:
      raise errors.ConfigError(
        f"config.model.dtype={self.dtype!r} is unknown. Fix: use one of {DTYPES}."
      )
    return None if self.dtype == "float32" else jnp.dtype(self.dtype)

  def _to_float32(self, value):
    """Mixed precision hands float32 out (logits, sown activations); float32 models: unchanged."""
    return value if self.compute_dtype is None else value.astype(jnp.float32)

  def _sow(self, name: str, value):
    self.sow(_INTERMEDIATES, name, self._to_float32(value))

  def _init(self, first: bool = False, scale: float = 1.0) -> Initializer:
    """The kernel initializer of a layer (`first`: the model's first layer)."""
    if first and self.first_kernel_init is not None:
      return self.first_kernel_init
    if first and self.first_layer_std is not None:
      return nn.initializers.normal(float(self.first_layer_std))
    name, s = self.kernel_init, self.init_scale
    if first:
      name = self.first_layer_init or name
      s = s if self.first_layer_scale is None else self.first_layer_scale
    init = make_initializer(name, s)
    return init if scale == 1.0 else _scaled(init, scale)

  def _dense(self, x, features: int, name: str, first: bool = False):
    self._sow(f"{name}_inputs", x)
    return nn.Dense(
      features,
      kernel_init=self._init(first),
      bias_init=nn.initializers.zeros,
      dtype=self.compute_dtype,
      name=name,
    )(x)

  def _conv(
    self,
    x,
    features: int,
    name: str,
    *,
    k: int = 3,
    stride: int = 1,
    padding: str = "SAME",
    first: bool = False,
    scale: float = 1.0,
  ):
    self._sow(f"{name}_inputs", x)
    return Conv(
      features,
      k,
      stride,
      padding,
      getattr(self, "conv_impl", "lax"),
      self._init(first, scale),
      self.compute_dtype,
      name=name,
    )(x)

  def _relu(self, h, name: str):
    h = nn.relu(h)
    self._sow(f"{name}_relu", h)
    return h

  def _head(self, h, first: bool = False):
    """The last Dense layer; its logits are returned as float32 whatever `dtype`."""
    h = self._dense(h.reshape(h.shape[0], -1), self.num_classes, "head", first=first)
    return self._to_float32(h)


# ----------------------------------------------------------------------------------------------
# Models.


class DenseNet(_Base):
  """Flatten -> (Dense + ReLU) per width -> head.  Fig 20: d -> 2048 -> 256 -> 10."""

  widths: Sequence[int] = (2048, 256)
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    h = x.reshape(x.shape[0], -1)
    for i, w in enumerate(self.widths):
      name = f"dense_{i}"
      h = self._relu(self._dense(h, w, name, first=i == 0), name)
    return self._head(h, first=not self.widths)


class PaperCNN(_Base):
  """Fig 2/4: conv F filters k x k VALID -> ReLU -> flatten -> dense hidden -> ReLU -> head."""

  features: int = 256
  kernel_size: int = 3
  hidden: int = 64
  num_classes: int = 10
  conv_impl: str = "lax"

  @property
  def blocks_in_cache(self) -> bool:
    """True when the step already runs cache-blocked (the fused block): no gradient micro-batches
    (`rl_align.engine.layout.choose_microbatch`)."""
    return self.conv_impl in ("fused", "pallas")

  @nn.compact
  def __call__(self, x):
    if self.conv_impl in ("fused", "pallas") and not self.is_mutable_collection(_INTERMEDIATES):
      return self._head(nn.relu(self._fused_block(x)))
    h = self._relu(
      self._conv(x, self.features, "conv_0", k=self.kernel_size, padding="VALID", first=True),
      "conv_0",
    )
    h = self._relu(self._dense(h.reshape(h.shape[0], -1), self.hidden, "dense_0"), "dense_0")
    return self._head(h)

  def _fused_block(self, x):
    """dense_0's pre-activation by `fused.conv_relu_dense` (CPU) or `pallas_fused` (accelerators),
    with the unfused path's params, computed in `dtype`."""
    k, f = self.kernel_size, self.features
    ck, cb = _Params(((k, k, x.shape[-1], f), (f,)), self._init(first=True), name="conv_0")()
    ho, wo = x.shape[1] - k + 1, x.shape[2] - k + 1
    dk, db = _Params(((ho * wo * f, self.hidden), (self.hidden,)), self._init(), name="dense_0")()
    if self.compute_dtype is not None:  # mixed precision: everything in it (float32 sums)
      x, ck, cb, dk, db = (a.astype(self.compute_dtype) for a in (x, ck, cb, dk, db))
    if self.conv_impl == "pallas":
      return pallas_fused.conv_relu_dense(x, ck.astype(x.dtype), cb, dk) + db
    rows = fused.block_rows(x.shape[0], ho, wo, f)
    return fused.conv_relu_dense(x, ck.astype(x.dtype), cb, dk, rows) + db


class _Params(nn.Module):
  """Declares {"kernel": shapes[0], "bias": shapes[1]} like nn.Conv / nn.Dense (same names, same
  order, so the same init keys) and returns them."""

  shapes: tuple
  kernel_init: Initializer

  @nn.compact
  def __call__(self):
    return (
      self.param("kernel", self.kernel_init, self.shapes[0]),
      self.param("bias", nn.initializers.zeros, self.shapes[1]),
    )


class SmallCNN(_Base):
  """The benchmark reference CNN "conv 3->32->64" for 32x32x3 inputs.

  conv3x3 SAME 32 -> ReLU -> conv3x3 SAME 64 -> ReLU -> global average pool -> head.  With a batch
  of 128 one SGD step (forward + backward) costs 14.45 GFLOP by XLA's cost analysis, the figure
  the first measurements quoted (VALID convs or a flatten head give 11.9-14.9 GFLOP).
  """

  features: Sequence[int] = (32, 64)
  num_classes: int = 10
  conv_impl: str = "lax"

  @nn.compact
  def __call__(self, x):
    h = x
    for i, f in enumerate(self.features):
      h = self._relu(self._conv(h, f, f"conv_{i}", first=i == 0), f"conv_{i}")
    return self._head(h.mean(axis=(1, 2)))


class VGG16(_Base):
  """The paper's CIFAR VGG16: 13 conv3x3 SAME + ReLU, 5 max-pools, flatten -> one linear head.

  No average pool and no two last FC layers.  `width` is the base channel count (64 in VGG16):
  conv layers from index `widen_from` on have width/64 times the paper's channels, earlier ones keep
  them (so widen_from=0 scales every layer; a larger widen_from widens only the later layers).
  """

  num_classes: int = 10
  width: int = 64
  widen_from: int = 0
  conv_impl: str = "lax"
  kernel_init: str = dataclasses.field(default="he_normal", kw_only=True)

  @nn.compact
  def __call__(self, x):
    h, i = x, 0
    for c in _VGG16_PLAN:
      if c == "M":
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
        continue
      f = max(1, c * self.width // 64) if i >= self.widen_from else c
      h = self._relu(self._conv(h, f, f"conv_{i}", first=i == 0), f"conv_{i}")
      i += 1
    return self._head(h)


class _ResidualNet(_Base):
  """Shared basic block: relu(conv_b(relu(conv_a(x))) + shortcut(x)), conv_b scaled at init."""

  def _block(self, x, k: int, features: int, stride: int):
    """Block whose convs are conv_{k}, conv_{k+1}; returns (output, next conv index)."""
    a, b = f"conv_{k}", f"conv_{k + 1}"
    h = self._relu(self._conv(x, features, a, stride=stride), a)
    h = self._conv(h, features, b, scale=self.residual_init_scale)
    if stride != 1 or x.shape[-1] != features:
      x = self._conv(x, features, f"{a}_shortcut", k=1, stride=stride, padding="VALID")
    return self._relu(h + x, b), k + 2

  def _stages(self, h, stages: Sequence[tuple[int, int]], blocks: int):
    k = 1
    for features, stride in stages:
      for j in range(blocks):
        h, k = self._block(h, k, features, stride if j == 0 else 1)
    return self._head(h.mean(axis=(1, 2)))


class ResNet18(_ResidualNet):
  """CIFAR ResNet18: 3x3 stem, 4 stages x 2 basic blocks (width, 2w, 4w, 8w), avg pool, head.

  No normalization: the last conv of each branch starts at `residual_init_scale` x its init.
  """

  num_classes: int = 10
  width: int = 64
  residual_init_scale: float = 0.0
  conv_impl: str = "lax"
  kernel_init: str = dataclasses.field(default="he_normal", kw_only=True)

  @nn.compact
  def __call__(self, x):
    h = self._relu(self._conv(x, self.width, "conv_0", first=True), "conv_0")
    w = self.width
    return self._stages(h, [(w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)], blocks=2)


class WRN(_ResidualNet):
  """Wide ResNet WRN-depth-width (post-activation basic blocks, no normalization).

  Stem conv_0 (16 filters, `first_kernel_size` x `first_kernel_size`; Fig 3 uses 5x5), then 3
  groups of (depth - 4) / 6 blocks with 16w, 32w, 64w channels and strides 1, 2, 2, avg pool, head.
  """

  depth: int = 28
  width: int = 4
  first_kernel_size: int = 5
  num_classes: int = 10
  residual_init_scale: float = 0.0
  conv_impl: str = "lax"
  kernel_init: str = dataclasses.field(default="he_normal", kw_only=True)

  @nn.compact
  def __call__(self, x):
    if self.depth < 10 or (self.depth - 4) % 6:
      raise errors.ConfigError(
        f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got "
        f"{self.depth}. Fix: e.g. --config.model.depth=28."
      )
    h = self._relu(self._conv(x, 16, "conv_0", k=self.first_kernel_size, first=True), "conv_0")
    w = self.width
    return self._stages(h, [(16 * w, 1), (32 * w, 2), (64 * w, 2)], blocks=(self.depth - 4) // 6)


MODELS: dict[str, type[nn.Module]] = {
  "dense": DenseNet,
  "paper_cnn": PaperCNN,
  "small_cnn": SmallCNN,
  "vgg16": VGG16,
  "resnet18": ResNet18,
  "wrn": WRN,
}


# ----------------------------------------------------------------------------------------------
# Building and inspecting models.


def fields(cls) -> list[str]:
  """The configurable fields of a model class (dataclass fields but parent/name)."""
  return [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]


def validate(model: nn.Module) -> None:
  """Raises ConfigError for a bad init name, conv_impl or scale, before anything is compiled."""
  for field in ("kernel_init", "first_layer_init"):
    name = getattr(model, field)
    if name is not None and name not in INITS:
      raise errors.ConfigError(
        f"config.model.{field}={name!r} is unknown. Fix: use one of {INITS}."
      )
  impl = getattr(model, "conv_impl", "lax")
  if impl not in CONV_IMPLS:
    raise errors.ConfigError(
      f"config.model.conv_impl={impl!r} is unknown. Fix: use one of {CONV_IMPLS}."
    )
  if model.dtype not in DTYPES:
    raise errors.ConfigError(
      f"config.model.dtype={model.dtype!r} is unknown. Fix: use one of {DTYPES}."
    )
  if model.first_layer_std is not None and not model.first_layer_std >= 0:
    raise errors.ConfigError(
      f"config.model.first_layer_std must be >= 0 (or None for the default "
      f"init), got {model.first_layer_std}."
    )


def build(config: Mapping[str, Any]) -> nn.Module:
  """The model named config["name"] (MODELS) with the other keys as its fields."""
  cfg = dict(config.to_dict() if hasattr(config, "to_dict") else config)
  name = cfg.pop("name", None)
  if name not in MODELS:
    raise errors.ConfigError(
      f"config.model.name={name!r} is not a model. Fix: set it to one of {sorted(MODELS)}."
    )
  cls = MODELS[name]
  unknown = sorted(set(cfg) - set(fields(cls)))
  if unknown:
    raise errors.ConfigError(
      f"config.model has fields {unknown} that model {name!r} does not "
      f"have. Fix: remove them; its fields are {fields(cls)}."
    )
  cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
  model = cls(**cfg)
  validate(model)
  return model


def is_conv_model(model: nn.Module) -> bool:
  """True for models with convolutions (they have a `conv_impl` field)."""
  return hasattr(model, "conv_impl")


def _natural_key(name: str) -> list[Any]:
  """'conv_10' -> ['conv_', 10, '']: digit runs compare as numbers."""
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def sort_layers(names) -> list[str]:
  """Layer names in forward order.

  Natural sort: conv_2 < conv_2_shortcut < conv_10 < dense_0 < head.
  """
  return sorted(names, key=_natural_key)


def layer_names(params: Mapping[str, Any]) -> list[str]:
  """Top-level params entries that have a kernel, in forward order."""
  return sort_layers(k for k, v in params.items() if isinstance(v, Mapping) and "kernel" in v)


def first_layer_name(params: Mapping[str, Any]) -> str:
  names = layer_names(params)
  if not names:
    raise errors.ConfigError(
      f"params have no layer with a kernel (top-level keys {list(params)}). "
      "Fix: pass the 'params' collection of a model from rl_align.models."
    )
  return names[0]


def first_layer_kernel(params: Mapping[str, Any]):
  """The first layer's kernel (dense [d, h] / conv [k, k, C, F], or [S, ...] with a seed axis)."""
  return params[first_layer_name(params)]["kernel"]


def activations(model: nn.Module, params, x) -> dict[str, dict[str, jax.Array]]:
  """{layer: {"inputs": array, "relu": array}} of one forward pass, layers in forward order.

  "relu" is absent for layers not followed by a ReLU (head, residual shortcuts).
  """
  _, state = model.apply({"params": params}, x, mutable=[_INTERMEDIATES])
  out: dict[str, dict[str, jax.Array]] = {}
  for key, value in state.get(_INTERMEDIATES, {}).items():
    for suffix in _SUFFIXES:
      if key.endswith(suffix):
        out.setdefault(key[: -len(suffix)], {})[suffix[1:]] = value[0]
  return {k: out[k] for k in sort_layers(out)}
