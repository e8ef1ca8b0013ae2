"""Mixed precision (config.model.dtype = "bfloat16") leaves the science unchanged.

Each science check trains the same seeds (same init, labels and batch order) in float32 and in
bfloat16 with the engine, then compares what the paper measures, statistically:
- Fig 20 right (fig20.py:right,tiny, 4 seeds, 40 epochs): per sigma, the seed-mean of f in bf16 and
  in f32 differ by at most 2 standard errors of that difference, 2 * sqrt(sd_bf16^2/S +
  sd_f32^2/S), the criterion for two independent seed sets; and, because the seeds are shared, the
  paired gap |f_bf16 - f_f32| is small against how far training moved f from its init.
- Fig 2 (fig2.py:random,tiny, 8 seeds x 16 filters pooled, 20 epochs at lr 0.03): the pooled
  misalignment in the data eigenbasis stays below the random basis in both precisions, and the two
  precisions agree within 2 jackknife (leave-one-seed-out) standard errors.
Plus the model contract (float32 params, gradients and logits; activations in bfloat16) and every
conv path (`lax`, `im2col`, the CPU `fused` block, the Pallas `pallas` block) honouring the dtype.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import fig2, fig20
from rl_align import alignment, covariance, data, errors, models, seeds, train
from rl_align.engine import config as engine_config
from tests.tolerances import assert_close, rounding_tol

DTYPES = ("float32", "bfloat16")
EPS_BF16 = float(jnp.finfo(jnp.bfloat16).eps)  # 2^-7: bfloat16 keeps 8 significant bits


def _engine_config(train_cfg, seeds: int, epochs: int, n: int, **fields):
  cfg = engine_config.default_config()
  cfg.update(train_cfg.to_dict())
  cfg.num_seeds, cfg.num_epochs, cfg.snapshot_steps, cfg.snapshot_epochs = seeds, epochs, (), ()
  cfg.log_every_steps = epochs * (n // cfg.batch_size)  # one log / eval, at the end
  cfg.update(fields)
  return cfg


@pytest.fixture(scope="module")
def fig20_right():
  """{dtype: (f [S, d] final, f [S, d] at init)} of Fig 20 right at tiny size, 4 seeds, 40 epochs."""
  c = fig20.get_config("right,tiny")
  panel = c.panels.right
  kw = panel.data.kwargs.to_dict()
  ds = data.load("gaussian", **kw)
  cfg = _engine_config(c.train, seeds=4, epochs=40, n=len(ds.x), snapshot_steps=(0,))
  labels = seeds.random_labels(cfg.seed, seeds.seed_ids(cfg), len(ds.x), c.num_classes)
  cov_x = data.gaussian_covariance(stds=kw["stds"])
  f_of = lambda k: np.stack(
    [alignment.transfer_function(cov_x, covariance.weight_covariance(ks))[1] for ks in k]
  )
  out = {}
  for dtype in DTYPES:
    model = models.build({**c.model.to_dict(), "widths": tuple(panel.model.widths), "dtype": dtype})
    res = train.train(model, cfg, ds.x, labels)
    out[dtype] = (
      f_of(models.first_layer_kernel(res.params)),
      f_of(res.snapshots[0]["first_kernel"]),
    )
  return out


def test_fig20_right_f_agrees_within_the_seed_spread(fig20_right):
  (f32, init32), (f16, init16) = fig20_right["float32"], fig20_right["bfloat16"]
  np.testing.assert_array_equal(init32, init16)  # float32 params: the same init
  s = len(f32)
  se = np.sqrt(f32.var(0, ddof=1) / s + f16.var(0, ddof=1) / s)
  gap = np.abs(f16.mean(0) - f32.mean(0))
  assert np.all(gap <= 2 * se), f"f differs by more than 2 standard errors: {gap / se}"
  moved = np.abs(f32 - init32).mean()
  paired = np.abs(f16 - f32).mean()
  assert moved > 5e-3, moved  # training did move f (else the check is empty)
  assert paired < 0.25 * moved, (paired, moved)  # rounding moves it far less than training


def _pooled(cov_w_of, v, r, s):
  """Pooled misalignment in bases v and r, and their jackknife standard errors over the seeds."""
  full = np.array([alignment.misalignment(cov_w_of(range(s)), b) for b in (v, r)])
  loo = np.array(
    [
      [alignment.misalignment(cov_w_of([j for j in range(s) if j != i]), b) for b in (v, r)]
      for i in range(s)
    ]
  )
  se = np.sqrt((s - 1) / s * ((loo - loo.mean(0)) ** 2).sum(0))
  return full, se


def test_fig2_eigenbasis_stays_below_random_basis_in_both():
  c = fig2.get_config("random,tiny")
  ds = data.load("photos", split="train", **{**c.data.kwargs.to_dict(), "n": 512})
  x = data.standardize(ds.x, *data.channel_stats(ds.x))
  cfg = _engine_config(c.train, seeds=8, epochs=20, n=len(x), learning_rate=0.03)
  labels = seeds.random_labels(cfg.seed, seeds.seed_ids(cfg), len(x), c.num_classes)
  _, cov_x = covariance.patch_covariance(x, k=3)
  _, v = alignment.eigh_desc(cov_x)
  r = alignment.random_basis(0, v.shape[0])
  got = {}
  for dtype in DTYPES:
    res = train.train(models.build({**c.model.to_dict(), "dtype": dtype}), cfg, x, labels)
    k = models.first_layer_kernel(res.params)  # [S, 3, 3, 3, 16]
    got[dtype] = _pooled(lambda ids: covariance.weight_covariance(k[list(ids)]), v, r, len(k))
  for dtype, ((eig, rand), _) in got.items():
    assert eig < 0.75 * rand, (dtype, eig, rand)  # the paper's Fig 2 claim, in both precisions
  (m32, se32), (m16, se16) = got["float32"], got["bfloat16"]
  assert np.all(np.abs(m16 - m32) <= 2 * np.sqrt(se32**2 + se16**2)), (m16, m32, se16, se32)


def test_bfloat16_model_keeps_float32_params_gradients_and_logits():
  x = jax.random.normal(jax.random.key(0), (2, 5))
  model = models.DenseNet(widths=(8, 4), num_classes=3, dtype="bfloat16")

  @jax.jit
  def run(key):
    params = model.init(key, x)["params"]
    grads = jax.grad(lambda p: model.apply({"params": p}, x).sum())(params)
    return params, grads, model.apply({"params": params}, x), models.activations(model, params, x)

  params, grads, logits, acts = run(jax.random.key(1))
  for leaf in jax.tree.leaves((params, grads)):
    assert leaf.dtype == jnp.float32
  assert logits.dtype == jnp.float32
  relu = acts["dense_1"]["relu"]  # handed out as float32 ...
  assert relu.dtype == jnp.float32 and float(jnp.abs(relu).max()) > 0
  np.testing.assert_array_equal(relu, relu.astype(jnp.bfloat16).astype(jnp.float32))  # in bf16


def test_unknown_dtype_is_one_config_error():
  with pytest.raises(
    errors.ConfigError, match=r"config.model.dtype='float16' is unknown.*bfloat16"
  ):
    models.build({"name": "dense", "dtype": "float16"})


def _matmul_dtypes(jaxpr) -> set:
  """{(lhs dtype, rhs dtype)} of every dot_general / convolution in a jaxpr, sub-jaxprs included
  (scan and loop bodies, custom-VJP functions, Pallas kernels)."""
  out = set()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
      out.add(tuple(str(v.aval.dtype) for v in eqn.invars[:2]))
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          out |= _matmul_dtypes(sub)
  return out


def test_every_conv_path_computes_in_bfloat16():
  # For every conv_impl, every matmul and convolution of the step (forward and backward, inside
  # the fused ops too) takes bfloat16 operands, and the logits stay within bfloat16's rounding
  # bound of the float32 model's.  Chain: conv (27), dense (6*6*8), head (16) and 6 elementwise
  # roundings (casts, biases, ReLUs).
  x = jax.random.normal(jax.random.key(2), (4, 8, 8, 3))
  plain = models.PaperCNN(features=8, hidden=16)
  params = jax.jit(plain.init)(jax.random.key(0), x)["params"]
  bf16 = {impl: plain.clone(conv_impl=impl, dtype="bfloat16") for impl in models.CONV_IMPLS}
  for impl, model in bf16.items():
    step = jax.make_jaxpr(jax.grad(lambda p, m=model: m.apply({"params": p}, x).sum()))(params)
    assert _matmul_dtypes(step.jaxpr) == {("bfloat16", "bfloat16")}, impl
  y32, magnitude, y16 = jax.jit(
    lambda p: (
      plain.apply({"params": p}, x),
      plain.apply({"params": jax.tree.map(jnp.abs, p)}, jnp.abs(x)),
      {impl: m.apply({"params": p}, x) for impl, m in bf16.items()},
    )
  )(params)
  for impl, y in y16.items():
    assert y.dtype == jnp.float32
    assert_close(y, y32, rounding_tol(EPS_BF16, magnitude, 27 + 6 * 6 * 8 + 16 + 6), impl)
