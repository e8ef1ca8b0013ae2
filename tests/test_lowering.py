"""Every engine program lowers for "cuda" and "tpu", here on the CPU: what would break on an
accelerator breaks the suite instead of a user's run.

`jax.export.export(program, platforms=[p])(*abstract_args)` traces a program and lowers it to
StableHLO for platform p without a device of that kind: no compile, nothing allocated (every
argument is a `jax.ShapeDtypeStruct`, `rl_align.engine.programs.abstract_programs`).  An Engine is
built on this host with the layout, conv implementation and gradient micro-batch the engine
resolves on p (`rl_align.engine.layout.pinned_config`), at the shapes of the paper configs (their
models, batch sizes, seeds and eval batch sizes, CIFAR10 32x32x3 or ImageNet 64x64x3 examples).
Programs: the training chunk (device-resident data) and the evaluation of every case; the host-fed
chunk (`chunk_fed`) of the ImageNet config (placement host); the init of the Fig 5 CNN.  The suite
exposes one XLA device per core (tests/conftest.py): members are sharded over a mesh of 2 devices
wherever their count allows it (asserted), over one otherwise.

On a GPU host the Pallas block's backend "auto" is Triton (`rl_align.pallas_fused`), on this CPU
it is interpret mode; so the Pallas layouts are traced here with `jax.default_backend()` answering
"gpu", as on a GPU host, and their lowering holds the two Triton kernels (the forward and the
backward; counted).  Triton's own compile to PTX runs only on a GPU.

What cannot lower: the Pallas block on TPU (`layout.UNSUPPORTED`: Triton kernels only, no Mosaic
TPU kernels).  `choose_layout` never picks it, `resolve` refuses it with a ConfigError naming the
platform and the fix, and its lowering fails (both asserted below).
"""

import importlib

import jax
import pytest

from rl_align import errors
from rl_align import models
from rl_align import seeds
from rl_align import sweep
from rl_align.engine import programs
from rl_align.engine import layout

PLATFORMS = ("cuda", "tpu")
TRITON = "__gpu$xla.gpu.triton"
CIFAR, CIFAR_TRAIN = (32, 32, 3), 50_000

# name -> (config module, argument, panel (Fig 20) or None, example shape, training examples):
# each the paper-scale config a user runs, with the shapes of its dataset's training split.
CASES = {
  "fig5_paper_cnn": ("fig5", "", None, CIFAR, 20_000),  # upstream split, batch 256
  "fig4_paper_cnn": ("fig4_cnn", "random", None, CIFAR, CIFAR_TRAIN),  # 50 seeds
  "fig1_vgg16": ("fig1", "negative", None, CIFAR, 20_000),
  "fig3_wrn_28_4": ("fig3", "", None, CIFAR, CIFAR_TRAIN),  # 70 seeds, 5x5 stem
  "specialization_resnet18": ("specialization", "resnet18_cifar10", None, CIFAR, 20_000),
  "fig20_dense": ("fig20", "all", "middle", (30,), 10_000),
  "imagenet_vgg16": ("imagenet", "", None, (64, 64, 3), 100_000),  # placement host
  # The paper CNN on Fashion-MNIST (28x28x1): other Pallas block shapes (k*k*C = 9, 26x26).
  "fig5_fmnist_cnn": ("fig5", "fmnist", None, (28, 28, 1), 25_000),  # 64 filters, batch 128
  "fig4_fmnist_cnn": ("fig4_cnn", "random,fmnist", None, (28, 28, 1), 4_000),  # eval 1024
}


def paper_case(name: str):
  """(model, engine config, x shape) of a case, as its config file gives them."""
  module, arg, panel, example, n = CASES[name]
  c = importlib.import_module(f"experiments.configs.{module}").get_config(arg)
  if panel is not None:
    from rl_align.runners import eigenmap  # pylint: disable=g-import-not-at-top

    c = eigenmap.panel_config(c, panel)
  return models.build(c.model), c.train, (n,) + tuple(example)


def engine_for(platform: str, model, cfg, x_shape, n_members=None, with_decay=None):
  """The Engine this host builds of the program `platform` runs (`layout.pinned_config`)."""
  pinned = layout.pinned_config(model, cfg, platform, x_shape[1:])
  return programs.Engine(
    model, pinned, x_shape, n_members or int(cfg.num_seeds), with_decay=with_decay
  )


def lower(eng, program: str, platform: str):
  """jax.export of one of the engine's programs for `platform` (Triton custom calls allowed:
  they are what the Pallas block lowers to on a GPU)."""
  fn, args = programs.abstract_programs(eng)[program]
  checks = [jax.export.DisabledSafetyCheck.custom_call(TRITON)]
  return jax.export.export(fn, platforms=[platform], disabled_checks=checks)(*args)


def check_lowers(eng, platform: str, programs=("chunk", "evaluate")) -> dict:
  """Lowers `programs` for `platform`; checks each module's platform and device count.  Returns
  {program: its StableHLO text}."""
  out = {}
  for program in programs:
    exp = lower(eng, program, platform)
    assert exp.platforms == (platform,), (program, exp.platforms)
    assert exp.nr_devices == eng.mesh.size, (program, exp.nr_devices, eng.mesh.size)
    out[program] = exp.mlir_module()
  return out


@pytest.fixture
def gpu_host(monkeypatch):
  """jax.default_backend() answers "gpu" as on a GPU host: the Pallas block picks Triton."""
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")


# ----------------------------------------------------------------------------------------------
# The auto layout of every paper config.


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("name", list(CASES))
def test_paper_configs_lower_in_their_auto_layout(name, platform):
  model, cfg, x_shape = paper_case(name)
  assert cfg.member_lift == "auto" and cfg.conv_impl == "auto"  # what a user runs
  eng = engine_for(platform, model, cfg, x_shape)
  want = layout.choose_layout(model, platform)
  assert eng.layout == want and eng.microbatch == cfg.batch_size  # vmap, im2col, full batch
  if int(cfg.num_seeds) % 2 == 0:
    assert eng.mesh.size == 2  # sharded over both devices of the suite
  host_fed = name == "imagenet_vgg16"
  texts = check_lowers(
    eng,
    platform,
    ("chunk_fed", "evaluate")
    if host_fed
    else ("chunk", "evaluate") + (("init",) if name == "fig5_paper_cnn" else ()),
  )
  assert not any(TRITON in t for t in texts.values())


# ----------------------------------------------------------------------------------------------
# Every layout of the paper CNN (Fig 5: 32x32x3, 256 filters, dense 64, batch 256, 8 seeds).


LIFTS, IMPLS = layout.MEMBER_LIFTS, models.CONV_IMPLS


def _paper_cnn(dtype="float32", lift="auto", impl="auto", num_seeds=None):
  model, cfg, x_shape = paper_case("fig5_paper_cnn")
  cfg = cfg.copy_and_resolve_references()
  cfg.member_lift, cfg.conv_impl = lift, impl
  if num_seeds:
    cfg.num_seeds = num_seeds
  return model.clone(dtype=dtype), cfg, x_shape


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "pallas"])
@pytest.mark.parametrize("lift", LIFTS)
def test_every_xla_layout_of_the_paper_cnn_lowers(lift, impl, platform):
  # unroll traces one copy of the member per member of a device: 4 members (2 per device).
  model, cfg, x_shape = _paper_cnn(lift=lift, impl=impl, num_seeds=4 if lift == "unroll" else None)
  eng = engine_for(platform, model, cfg, x_shape)
  assert eng.layout == layout.Layout(lift, impl) and eng.mesh.size == 2
  check_lowers(eng, platform)


def _check_triton_kernels(eng, lift: str) -> None:
  texts = check_lowers(eng, "cuda")
  # unroll: one forward and one backward kernel per member of a device (2 on each of 2 devices).
  copies = eng.m_pad // eng.mesh.size if lift == "unroll" else 1
  assert texts["chunk"].count(f"@{TRITON}") == 2 * copies  # forward and backward kernels
  assert texts["evaluate"].count(f"@{TRITON}") == copies  # forward only


@pytest.mark.parametrize("dtype", models.DTYPES)
@pytest.mark.parametrize("lift", LIFTS)
def test_pallas_block_lowers_to_triton_for_cuda(lift, dtype, gpu_host):
  del gpu_host
  model, cfg, x_shape = _paper_cnn(dtype, lift, "pallas", num_seeds=4 if lift == "unroll" else None)
  eng = engine_for("cuda", model, cfg, x_shape)
  assert eng.layout == layout.Layout(lift, "pallas") and eng.microbatch == cfg.batch_size
  _check_triton_kernels(eng, lift)


@pytest.mark.parametrize("name", ["fig5_fmnist_cnn", "fig4_fmnist_cnn"])
def test_pallas_block_lowers_to_triton_at_the_fmnist_shapes(name, gpu_host):
  del gpu_host
  model, cfg, x_shape = paper_case(name)
  cfg = cfg.copy_and_resolve_references()
  cfg.member_lift, cfg.conv_impl = "vmap", "pallas"
  _check_triton_kernels(engine_for("cuda", model, cfg, x_shape), "vmap")


def test_pallas_block_cannot_run_on_tpu_and_auto_never_picks_it(gpu_host):
  del gpu_host
  model, cfg, x_shape = _paper_cnn(impl="pallas")
  with pytest.raises(
    errors.ConfigError,
    match=r"conv_impl='pallas' cannot run on tpu: .*Triton"
    r".*Fix: .*--config.train.conv_impl=auto; it picks "
    r"'im2col' there\) or another of \('lax', "
    r"'im2col', 'fused'\)\.$",
  ):
    engine_for("tpu", model, cfg, x_shape)
  # The reason is real: the program a GPU runs does not lower for TPU (Pallas's TPU lowering
  # meets Triton compiler parameters: jax 0.10 trips an assertion or raises a ValueError).
  eng = engine_for("cuda", model, cfg, x_shape)
  with pytest.raises((AssertionError, ValueError)):
    lower(eng, "chunk", "tpu")
  for platform in ("cpu", "gpu", "cuda", "rocm", "tpu"):
    for m in (model, models.build({"name": "small_cnn"}), models.build({"name": "dense"})):
      chosen = layout.choose_layout(m, platform)
      assert (layout.device_platform(platform), chosen.conv_impl) not in layout.UNSUPPORTED


@pytest.mark.parametrize("platform", PLATFORMS)
def test_bf16_paper_cnn_lowers_with_bf16_matmuls(platform):
  model, cfg, x_shape = _paper_cnn("bfloat16")
  eng = engine_for(platform, model, cfg, x_shape)
  text = check_lowers(eng, platform)["chunk"]
  assert "bf16" in text and "stablehlo.dot_general" in text


# ----------------------------------------------------------------------------------------------
# A packed sweep group: points of Fig 20 right that differ in learning rate and weight decay.


@pytest.mark.parametrize("platform", PLATFORMS)
def test_packed_sweep_group_lowers(platform):
  from experiments.configs import fig20  # pylint: disable=g-import-not-at-top
  from rl_align.runners import eigenmap  # pylint: disable=g-import-not-at-top

  config = eigenmap.panel_config(fig20.get_config("right"), "right")
  points = sweep.expand(
    config, sweep.parse_axes(["train.learning_rate=0.01,0.05", "train.weight_decay=0.0,0.0005"], [])
  )
  (group,) = sweep.group_points(points)  # all four points: one packed program
  members = seeds.Members.concat([seeds.Members.of(points[i].config.train) for i in group])
  assert len(set(members.learning_rate)) == 2 and len(set(members.weight_decay)) == 2
  c = points[group[0]].config
  d = len(c.data.kwargs.stds)
  eng = engine_for(
    platform,
    models.build(c.model),
    c.train,
    (int(c.data.kwargs.n), d),
    n_members=len(members),
    with_decay=any(w != 0 for w in members.weight_decay),
  )
  assert eng.with_decay and eng.m_pad == len(members) == 4 * int(c.train.num_seeds)
  check_lowers(eng, platform)
