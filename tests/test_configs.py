"""Config files: the strict argument parser, every documented argument, and the binaries' error line."""

import glob
import importlib
import json
import math
import os
import re

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import cli
from experiments.configs import common
from rl_align import errors
from rl_align import machine
from tests.helpers import ROOT, run_module

CONFIG_DIR = os.path.join(ROOT, "experiments", "configs")
NOT_CONFIGS = ("__init__", "common", "shared")
CONFIGS = sorted(
  os.path.basename(p)[:-3]
  for p in glob.glob(os.path.join(CONFIG_DIR, "*.py"))
  if os.path.basename(p)[:-3] not in NOT_CONFIGS
)


# ----------------------------------------------------------------------------------------------
# parse_arg.


def _parse(arg):
  return common.parse_arg(
    arg,
    transfer=common.OneOf("positive", "negative"),
    panels=common.AnyOf(
      "left", "middle", "right", aliases={"all": ("left", "middle", "right")}, default=("right",)
    ),
    local=False,
    steps=100,
    lr=0.5,
    name="x",
  )


def test_parse_arg_defaults_and_typed_values():
  a = _parse("")
  assert (a.transfer, a.panels, a.local, a.steps, a.lr, a.name) == (
    "positive",
    ("right",),
    False,
    100,
    0.5,
    "x",
  )
  a = _parse(" negative , local,steps=7,lr=1e-3,name=abc,,")
  assert (a.transfer, a.local, a.steps, a.lr, a.name) == ("negative", True, 7, 1e-3, "abc")
  assert isinstance(a.steps, int) and isinstance(a.lr, float)
  assert _parse("transfer=negative,local=false").transfer == "negative"
  assert _parse("local=false").local is False and _parse("local=yes").local is True
  assert _parse("right,left").panels == ("left", "right")  # declaration order, no repeats
  assert _parse("all,left").panels == ("left", "middle", "right")
  assert _parse("panels=middle").panels == ("middle",)
  assert _parse("positive,positive").transfer == "positive"  # the same choice twice is fine
  with pytest.raises(AttributeError):
    _parse("").unknown_field  # pylint: disable=expression-not-assigned


@pytest.mark.parametrize(
  "arg, names",
  [
    ("negtive", ["'negtive'", "did you mean 'negative'"]),
    ("lcoal", ["'lcoal'", "did you mean 'local'"]),
    ("stpes=3", ["'stpes=3'", "did you mean 'steps'"]),
    ("zzz", ["'zzz'", "Accepted:", "positive|negative", "steps=<int>"]),
    ("steps=3.5", ["steps='3.5'", "expected an int"]),
    ("lr=fast", ["lr='fast'", "expected a float"]),
    ("local=maybe", ["local='maybe'", "true or false"]),
    ("transfer=neutral", ["transfer='neutral'", "positive|negative"]),
    ("positive,negative", ["'positive' and 'negative' both set 'transfer'"]),
  ],
)
def test_parse_arg_rejects_with_one_line_naming_the_argument(arg, names):
  with pytest.raises(errors.ConfigError) as e:
    _parse(arg)
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith("test_configs.py: ")
  for n in names:
    assert n in msg, (n, msg)


def test_parse_arg_catches_its_own_misuse():
  with pytest.raises(TypeError, match="both"):
    common.parse_arg("", local=False, scale=common.OneOf("paper", "local"))
  with pytest.raises(TypeError, match="default"):
    common.OneOf("a", "b", default="c")
  with pytest.raises(TypeError, match="must be bool"):
    common.parse_arg("", field=None)


def test_base_config_has_the_fields_every_runner_reads():
  c = common.base_config()
  assert set(c) == {"data", "labels", "num_classes", "model", "train", "claims"}
  assert c.claims.figure == ""  # no figure: the runner records no claims
  assert c.train.optimizer == "momentum" and c.data.name == "gaussian"
  assert c.data.placement == "device"


def test_every_figure_config_names_registered_claims():
  """Each paper figure's config says which claims its run serves (results.json claims.figure),
  and the claims registry knows that figure."""
  from rl_align import claims  # pylint: disable=g-import-not-at-top
  from experiments.configs import fig1, fig2, fig3, fig4_cnn, fig5, fig20, imagenet, specialization

  want = {
    (fig1, "negative"): "fig1",
    (fig2, ""): "fig2",
    (fig3, ""): "fig3",
    (fig4_cnn, ""): "fig4",
    (fig5, ""): "fig5",
    (fig20, "all"): "fig20",
    (imagenet, ""): "table1",
    (specialization, "local"): "specialization",
    (specialization, "vgg16_fmnist"): "fig1_search",
  }
  for (module, arg), key in want.items():
    assert module.get_config(arg).claims.figure == key, module.__name__
    assert key in claims.figures()
  assert fig1.get_config("negative").claims.direction == "negative"


# ----------------------------------------------------------------------------------------------
# Every config file.

# The argument combinations the docstrings, the README and the binaries document (more are
# collected from those texts below, so a documented command cannot go untested).
DOCUMENTED = {
  "fig1": [
    "positive",
    "negative",
    "positive,local",
    "negative,local",
    "positive,random",
    "negative,random",
    "positive,local,random",
  ],
  "fig2": ["random,real", "random,real,local", "random,real,tiny", "", "real,tiny"],
  "fig3": ["", "local", "tiny"],
  "fig4_cnn": ["random", "real", "random,local", "random,real,local", "random,tiny", "real,local"],
  "fig5": ["", "local", "tiny", "local,all_layers", "local,random", "local,all_layers,random"],
  "fig20": ["all", "right", "left", "middle", "all,variance", "right,tiny", "left,middle"],
  "specialization": ["local", "tiny", "vgg16_cifar10", "resnet18_cifar10", "resnet18_imagenet"],
}


def _documented_in_texts(name: str) -> set:
  """Arguments of `name.py:ARG` in the commands of the README and the binaries (`--config=...`)
  and in the config files' docstrings."""
  found = set()
  for p in [os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(ROOT, "experiments", "*.py")):
    found |= set(
      re.findall(
        rf"--config=experiments/configs/{name}\.py:([\w,=.]+)", open(p, encoding="utf-8").read()
      )
    )
  for other in CONFIGS:
    text = open(os.path.join(CONFIG_DIR, f"{other}.py"), encoding="utf-8").read()
    found |= set(re.findall(rf"\b{name}\.py:([\w,=.]+)", text))
  return {a.rstrip(".,") for a in found}


def _cases():
  for name in CONFIGS:
    for arg in sorted(set(DOCUMENTED.get(name, [])) | _documented_in_texts(name) | {""}):
      yield name, arg


@pytest.mark.parametrize("name, arg", list(_cases()))
def test_every_documented_argument_loads(name, arg):
  module = importlib.import_module(f"experiments.configs.{name}")
  c = module.get_config(arg)
  assert isinstance(c, ml_collections.ConfigDict)
  for field in ("data", "model", "train"):
    assert field in c, field
  assert c.train.num_seeds >= 1
  json.dumps(c.to_dict(), default=str)  # the workdir's config.json can hold it


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_rejects_an_unknown_argument(name):
  module = importlib.import_module(f"experiments.configs.{name}")
  for bad in ("bogus_arg", DOCUMENTED.get(name, [""])[0] + ",bogus_arg", "bogus_key=3"):
    with pytest.raises(errors.ConfigError) as e:
      module.get_config(bad)
    msg = str(e.value)
    assert repr(bad.split(",")[-1]) in msg and f"{name}.py" in msg and "\n" not in msg


def test_every_config_is_covered_here():
  assert set(DOCUMENTED) <= set(CONFIGS), set(DOCUMENTED) - set(CONFIGS)


def _model_config(name: str, arg: str) -> ml_collections.ConfigDict:
  return importlib.import_module(f"experiments.configs.{name}").get_config(arg).model


@pytest.mark.parametrize("name, arg", list(_cases()))
def test_every_model_config_declares_float32_and_builds_in_bfloat16(name, arg):
  # config.model.dtype must exist for --config.model.dtype=bfloat16 to be accepted; float32 is the
  # default every recorded result was computed in.
  from rl_align import models  # pylint: disable=g-import-not-at-top

  model_cfg = _model_config(name, arg)
  assert model_cfg.dtype == "float32"
  assert models.build(model_cfg).compute_dtype is None  # float32: the inputs' dtype
  bf16 = models.build({**model_cfg.to_dict(), "dtype": "bfloat16"})
  assert bf16.dtype == "bfloat16" and bf16.compute_dtype == jnp.bfloat16


@pytest.mark.parametrize("name, arg", list(_cases()))
def test_every_config_declares_its_data_placement(name, arg):
  # Every runner reads config.data.placement (rl_align.inputs.load); declared, it can
  # be overridden with --config.data.placement=host.  Recorded results ran on the device.
  c = importlib.import_module(f"experiments.configs.{name}").get_config(arg)
  want = "host" if name == "imagenet" else "device"  # imagenet streams: 31 GB as float32 at 64x64
  assert c.data.placement == want
  if "f_only" in c and "data" in c.f_only:
    assert c.f_only.data.placement == "device"


@pytest.mark.parametrize("name", CONFIGS)
def test_placement_override_on_the_command_line(name):
  assert _parsed(name, "--config.data.placement=host").data.placement == "host"


def _representative(name: str) -> str:
  return DOCUMENTED.get(name, [""])[0]


def _parsed(name: str, override: str):
  """The binaries' path: config `name` (its representative argument) through ml_collections'
  config flag with one --config.x=... override (an undeclared field fails there)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  arg = _representative(name)
  spec = os.path.join(CONFIG_DIR, f"{name}.py") + (f":{arg}" if arg else "")
  argv = ["prog", f"--config={spec}", override]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=fv, sys_argv=argv)
  fv(argv)
  return fv.config


@pytest.mark.parametrize("name", CONFIGS)
def test_dtype_override_on_the_command_line(name):
  # The binaries' path: ml_collections' config flag with --config.model.dtype (an undeclared field
  # fails there with an AttributeError).
  from rl_align import models  # pylint: disable=g-import-not-at-top

  _model_config(name, _representative(name))
  config = _parsed(name, "--config.model.dtype=bfloat16")
  assert config.model.dtype == "bfloat16"
  assert models.build(config.model).compute_dtype == jnp.bfloat16


def test_arguments_select_what_they_name():
  from experiments.configs import fig1, fig2, fig5, fig20, specialization  # pylint: disable=g-import-not-at-top

  assert fig1.get_config("negative").upstream.num_classes == 100
  assert fig1.get_config("positive").upstream.num_classes == 10
  assert fig1.get_config("positive,local").data.name == "photos"
  assert fig1.get_config("positive,random").downstream.labels == "random"
  assert list(fig2.get_config("").panels) == ["random", "real"]
  assert fig2.get_config("real,tiny").model.features == 16
  assert (
    fig5.get_config("").data.name == "cifar10" and fig5.get_config("local").data.name == "photos"
  )
  assert fig5.get_config("local,all_layers").transfer_layers == 0
  assert list(fig20.get_config("right,tiny").panels) == ["right"]
  assert "variances" in fig20.get_config("all,variance").panels.left.data.kwargs
  assert specialization.get_config("resnet18_imagenet").data.name == "imagenet"


# ----------------------------------------------------------------------------------------------
# The binaries: one error line, exit 2; the run record.


@pytest.mark.slow
def test_binary_with_a_typo_in_the_config_argument_exits_2_with_one_error_line(tmp_path):
  proc = run_module(
    "experiments.transfer",
    "--config=experiments/configs/fig1.py:negtive",
    f"--workdir={tmp_path}",
    timeout=300,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: fig1.py: "), proc.stderr[-2000:]
  assert "'negtive'" in lines[0] and "did you mean 'negative'" in lines[0]
  assert not os.listdir(tmp_path)  # nothing ran


def test_run_main_writes_the_run_record_and_keeps_earlier_runs(tmp_path):
  wd = str(tmp_path)
  out = cli.run_main(lambda config, workdir: {"ok": config["x"]}, {"x": 1}, wd, argv=["prog", "-a"])
  assert out == {"ok": 1}
  rec = json.load(open(tmp_path / "run.json"))
  assert rec["status"] == "finished" and rec["argv"] == ["prog", "-a"]
  assert rec["wall_s"] >= 0 and rec["start"] <= rec["end"] and rec["earlier_runs"] == []
  m = rec["machine"]
  assert m["cores"] >= 1 and m["cpu_model"] and m["jax_backend"] and m["num_devices"] >= 1
  assert math.isfinite(m["fp32_matmul_gflops"]) and m["fp32_matmul_gflops"] > 0

  def broken(config, workdir):
    raise errors.DataError("the data are bad. Fix: other data.")

  with pytest.raises(SystemExit) as e:
    cli.run_main(broken, {"x": 1}, wd, argv=["prog", "-b"])
  assert e.value.code == 2
  rec = json.load(open(tmp_path / "run.json"))
  assert rec["status"].startswith("error: the data are bad")
  assert [r["argv"] for r in rec["earlier_runs"]] == [["prog", "-a"]]


def test_matmul_chain_computes_the_product():
  # The timed program must compute what it claims (2 n^3 flops per step).  n = 64, entries of
  # a ~ N(0, 1), of b ~ N(0, 1/n): float32 rounding grows like eps * sqrt(n) per product (random
  # signs); 3 chained products and a safety factor of 10 give the tolerance.
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  n = 64
  a = rng.standard_normal((n, n)).astype(np.float32)
  b = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
  import jax  # pylint: disable=g-import-not-at-top

  with jax.default_matmul_precision("highest"):  # float32, also where the default is TF32
    got = np.asarray(machine.matmul_chain(jnp.asarray(a), jnp.asarray(b), 3))
  want = a.astype(np.float64) @ b @ b @ b
  tol = 10 * 3 * np.finfo(np.float32).eps * np.sqrt(n) * np.abs(want).max()
  np.testing.assert_allclose(got, want, rtol=0, atol=tol)
