"""Tests of rl_align.transfer and the `experiments.transfer` binary (tiny, subprocess)."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs import fig1, fig5
from rl_align import covariance, errors, models, transfer
from rl_align.runners import transfer as transfer_runner
from tests.helpers import run_module
from tests.tolerances import f32_tol, f64_tol


def test_upstream_downstream_and_test_splits_are_disjoint_and_standardized_upstream():
  c = fig5.get_config("tiny")
  c.split.test = 32  # cut the test set from the same permutation
  c.data.kwargs.n = 288  # room for 128 + 128 + 32
  d = transfer_runner.load_data(c)
  idx = d.data.indices
  assert len(idx["upstream"]) == 128 and len(idx["downstream"]) == 128
  for a, b in (("upstream", "downstream"), ("upstream", "test"), ("downstream", "test")):
    assert not set(idx[a].tolist()) & set(idx[b].tolist())
  # float32 standardization (as tests/test_data.py): the mean rounded to float32 shifts z by
  # <= u |mean| / std, z rounds once or twice; the test's statistics are float64.
  c.data.standardize = False
  raw = transfer_runner.load_data(c).data.parts["upstream"].x.reshape(-1, 3).astype(np.float64)
  ratio = np.abs(raw.mean(0)) / raw.std(0)
  z = d.data.parts["upstream"].x.reshape(-1, 3).astype(np.float64)
  mean_tol = f32_tol(ratio + np.abs(z).max(), 2)
  assert np.all(np.abs(z.mean(0)) <= mean_tol), (z.mean(0), mean_tol)
  np.testing.assert_allclose(z.std(0), 1.0, rtol=0, atol=f32_tol(1.0, 3))
  down = np.abs(d.data.parts["downstream"].x.reshape(-1, 3).astype(np.float64).mean(0))
  assert down.max() > 100 * mean_tol.max()  # not re-standardized: off by sampling, not rounding


def test_arm_names_are_checked_and_scratch_comes_first():
  assert transfer.check_arms(["covariance", "scratch", "covariance_L5"]) == [
    "scratch",
    "covariance",
    "covariance_L5",
  ]
  assert transfer.check_arms(["pretrained"])[0] == "scratch"
  assert transfer.resolve("covariance")[1] == 1 and transfer.resolve("covariance_L3")[1] == 3
  with pytest.raises(errors.ConfigError, match="unknown arms"):
    transfer.check_arms(["scratch", "pretrained_fast"])


def _arm(acc):
  acc = np.asarray(acc, np.float64)
  return {"iterations": [0, 10, 20, 30], "train_accuracy": acc}


def test_summaries_speedup():
  arms = {
    "scratch": _arm([[0.1, 0.3, 0.5, 0.7]] * 2),
    "pretrained": _arm([[0.1, 0.5, 0.7, 0.8]] * 2),
    "covariance": _arm([[0.1, 0.49, 0.69, 0.8]] * 2),
    "pretrained_no_rescaling": _arm([[0.1, 0.55, 0.72, 0.8]] * 2),
  }
  s = transfer.summarize(arms, [0.5], [10, 30])
  # float64 on a few hand-made values: interpolations, ratios, differences of numbers <= 1.
  few = float(f64_tol(1.0, 8))
  assert s["speedup"]["pretrained"]["0.5"] == pytest.approx(2.0, rel=few)
  assert s["table"]["scratch"]["10"] == [pytest.approx(0.3, rel=few), 0.0]


def test_a_diverged_seed_enters_no_summary_or_check():
  arms = {
    "scratch": _arm([[0.1, 0.3, 0.5, 0.7], [0.1, 0.2, 0.4, 0.6], [0.1, 0.1, 0.1, 0.1]]),
    "pretrained": _arm([[0.1, 0.5, 0.7, 0.8], [0.1, 0.45, 0.7, 0.8], [0.1, 0.9, 0.9, 0.9]]),
    "covariance": _arm([[0.1, 0.49, 0.69, 0.8]] * 3),
  }
  arms["scratch"]["finished"] = [True, True, False]  # seed 2 diverged downstream
  arms["pretrained"]["finished"] = [True, True, False]  # its upstream seed diverged
  without = {
    a: _arm(np.asarray(r["train_accuracy"])[r.get("finished", [True] * 3)]) for a, r in arms.items()
  }
  assert transfer.summarize(arms, [0.5], [10, 30]) == transfer.summarize(without, [0.5], [10, 30])
  entry = transfer.arm_summary(
    arms["pretrained"]["train_accuracy"],
    [0.5, 0.6, 0.99],
    diverged=[False, False, False],
    upstream_diverged=[False, False, True],
  )
  assert entry["num_diverged"] == 1 and entry["test_accuracy_mean"] == pytest.approx(
    0.55, rel=f64_tol(1.0, 4)
  )  # a float64 mean of two values
  assert entry["train_accuracy"].shape == (3, 4)  # per-seed rows keep every seed


def test_arms_pool_only_the_upstream_seeds_that_finished():
  model = models.DenseNet(widths=(6, 4), num_classes=3)
  keys = jax.random.split(jax.random.key(0), 3)
  pre = jax.tree.map(np.array, jax.vmap(lambda k: model.init(k, jnp.zeros((1, 5))))(keys)["params"])
  pre["dense_0"]["kernel"][1] *= 1e14  # upstream seed 1 diverged: absurd, finite weights
  cfg = ml_collections.ConfigDict(
    {
      "downstream": {"seed": 3},
      "train": {"seed_offset": 0, "num_seeds": 3},
      "transfer_layers": 1,
      "layerwise": {"num_examples": 16, "num_bins": 4},
      "rescale_sampled": True,
    }
  )
  x = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
  ctx = transfer.ArmContext(
    cfg, model, model, pre, pre, x, x, upstream_diverged=[False, True, False]
  )
  np.testing.assert_array_equal(
    ctx.sigma_w(), covariance.weight_covariance(pre["dense_0"]["kernel"][[0, 2]])
  )
  assert len(ctx.build("covariance")) == 3 and ctx.build("covariance_L1") is ctx.build("covariance")
  with pytest.raises(errors.NumericalError, match="all 3 upstream seeds diverged"):
    transfer.ArmContext(cfg, model, model, pre, pre, x, x, upstream_diverged=[True] * 3).build(
      "covariance"
    )


def test_all_scratch_seeds_diverged_leaves_nan_summaries():
  arms = {
    "scratch": dict(_arm([[0.1, 0.3, 0.5, 0.7]] * 2), finished=[False, False]),
    "pretrained": _arm([[0.1, 0.5, 0.7, 0.8]] * 2),
  }
  s = transfer.summarize(arms, [0.5], [10])
  assert np.isnan(s["speedup"]["pretrained"]["0.5"]) and np.isnan(s["table"]["scratch"]["10"][0])


def _ctx(fit=None, seeds=4, d=5, h=6, spread=1.0):
  """An ArmContext whose "pretrained" first layers are inits with their input directions scaled
  from spread to 1 / spread (an anisotropic Sigma_w)."""
  model = models.DenseNet(widths=(h, 4), num_classes=3)
  keys = jax.random.split(jax.random.key(0), seeds)
  pre = jax.tree.map(np.array, jax.vmap(lambda k: model.init(k, jnp.zeros((1, d))))(keys)["params"])
  pre["dense_0"]["kernel"] *= np.geomspace(spread, 1 / spread, d)[None, :, None].astype(np.float32)
  cfg = ml_collections.ConfigDict(
    {
      "downstream": {"seed": 3},
      "train": {"seed_offset": 0, "num_seeds": seeds},
      "transfer_layers": 1,
      "layerwise": {"num_examples": 16, "num_bins": 4},
      "rescale_sampled": True,
    }
  )
  x = np.random.default_rng(0).normal(size=(16, d)).astype(np.float32)
  return transfer.ArmContext(
    cfg, model, model, pre, pre, x, x, upstream_fit=fit, upstream_classes=10
  ), pre


def test_sigma_w_pools_the_upstream_seeds_that_fitted():
  ctx, pre = _ctx(fit=[0.5, 0.1, 0.3, 0.15])  # 2x chance = 0.2: seeds 0 and 2
  np.testing.assert_array_equal(
    ctx.sigma_w(), covariance.weight_covariance(pre["dense_0"]["kernel"][[0, 2]])
  )
  rec = ctx.sigma_w_record()
  assert (
    rec["num_fitted"] == 2
    and rec["seeds"] == "fitted"
    and rec["pooled"].tolist() == [True, False, True, False]
  )
  ctx, pre = _ctx(fit=[0.1] * 4)  # none fitted: every finished seed
  np.testing.assert_array_equal(
    ctx.sigma_w(), covariance.weight_covariance(pre["dense_0"]["kernel"])
  )
  assert ctx.sigma_w_record()["num_fitted"] == 0


def test_rotated_control_keeps_the_spectrum_and_destroys_the_alignment():
  """covariance_rotated: each seed's first layer is covariance's rotated by a Haar-random Q, so
  its filters' second moment has the same eigenvalues (float64 rounding of a rotation) and the
  same norm, while its misalignment in Sigma_w's eigenbasis rises to the random-basis level."""
  from rl_align import alignment  # pylint: disable=g-import-not-at-top

  ctx, _ = _ctx(fit=[0.5] * 4, d=12, h=400, spread=3.0)
  cov, rot = ctx.build("covariance"), ctx.build("covariance_rotated")
  _, v = alignment.eigh_desc(ctx.sigma_w())
  mis = {}
  for name, arm in (("cov", cov), ("rot", rot)):
    k = np.stack([np.asarray(p["dense_0"]["kernel"], np.float64) for p in arm])
    mis[name] = np.mean([alignment.misalignment(covariance.weight_covariance(ki), v) for ki in k])
  for c, r in zip(cov, rot):
    a, b = (np.asarray(p["dense_0"]["kernel"], np.float64) for p in (c, r))
    # eigenvalues of W W^T / F agree to float32 rounding of the kernels (|w| <~ 1, d = 12 sums)
    ea, eb = (np.linalg.eigvalsh(w @ w.T / w.shape[1]) for w in (a, b))
    np.testing.assert_allclose(eb, ea, rtol=0, atol=f32_tol(ea.max(), 12))
    assert np.linalg.norm(a) == pytest.approx(np.linalg.norm(b), rel=float(f32_tol(1.0, 12)))
    np.testing.assert_array_equal(
      np.asarray(c["dense_1"]["kernel"]), np.asarray(r["dense_1"]["kernel"])
    )
  # 400 samples in 12 dimensions: the aligned draw sits at its finite-sample floor, the rotated one
  # far above it (a random basis).
  floor = alignment.finite_sample_floor(v, alignment.variances_in_basis(ctx.sigma_w(), v), 400, 0)
  assert mis["cov"] < floor[0] + 5 * floor[1] < mis["rot"]


def test_every_arm_is_registered_once_with_its_style():
  assert transfer.ARMS == (
    "scratch",
    "pretrained",
    "pretrained_no_rescaling",
    "covariance",
    "covariance_L2",
    "covariance_L3",
    "covariance_rotated",
    "pretrained_f_L2",
    "pca_whitening",
    "f_only",
  )
  assert transfer.carries_seeds("pretrained_f_L2")
  assert transfer.style("covariance_L2")[0] != transfer.style("covariance_L3")[0]
  (l1, n1), (cov, n) = transfer.resolve("covariance_L1"), transfer.resolve("covariance")
  assert l1.build is cov.build and n1 == n == 1
  assert transfer.carries_seeds("pretrained") and not transfer.carries_seeds("covariance")


def test_configs_build():
  for arg in ("", "local", "tiny", "local,all_layers,random"):
    c = fig5.get_config(arg)
    assert transfer.check_arms(c.arms)[0] == "scratch"
  for arg in ("positive", "negative", "positive,local", "negative,local"):
    c = fig1.get_config(arg)
    assert c.model.name == "vgg16"


def _run(workdir, *extra):
  return run_module(
    "experiments.transfer",
    "--config=experiments/configs/fig5.py:tiny",
    "--config.arms=('scratch','pretrained','covariance','covariance_L2')",
    f"--workdir={workdir}",
    *extra,
  )


@pytest.fixture(scope="module")
def device_run(tmp_path_factory):
  """The fig5 tiny binary with the data on the device (the config's placement): its workdir."""
  workdir = str(tmp_path_factory.mktemp("fig5_device"))
  p = _run(workdir)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "placement=device (forced)" in p.stderr
  return workdir


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def _without_runtimes(obj):
  """results.json minus what a second run may change (wall times, the placement it names)."""
  if isinstance(obj, dict):
    return {k: _without_runtimes(v) for k, v in obj.items() if k not in ("runtime_s", "placement")}
  if isinstance(obj, list):
    return [_without_runtimes(v) for v in obj]
  return obj


@pytest.mark.slow
def test_binary_writes_schema_and_resumes(device_run):
  workdir = device_run
  res = _results(workdir)
  assert list(res["arms"]) == ["scratch", "pretrained", "covariance", "covariance_L2"]
  for arm, r in res["arms"].items():
    steps = r["iterations"]
    assert steps[0] == 0 and steps[-1] == 20 and len(steps) == 5  # eval every 5
    assert np.asarray(r["train_accuracy"]).shape == (2, len(steps))  # seeds x iterations
    assert len(r["test_accuracy"]) == 2
  assert len(res["upstream"]["train_accuracy"]) == 2
  assert set(res["speedup"]) == {"pretrained", "covariance", "covariance_L2"}
  assert "dense_0" in res["transfer_functions"]
  assert os.path.exists(os.path.join(workdir, res["figure"]))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    n_rows = len(f.readlines())
  # Rerun: nothing retrains (no new metric rows), the results are identical.
  p = _run(workdir)
  assert p.returncode == 0, p.stderr[-3000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert len(f.readlines()) == n_rows
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == res


@pytest.mark.slow
def test_the_arms_run_as_one_program_and_a_crashed_pack_resumes_bitwise(
  device_run, tmp_path, monkeypatch
):
  """The downstream arms are one list of calls, packed into one program; a crash after the pack's
  first checkpoint, then a rerun, gives the uninterrupted run's results exactly."""
  from experiments.configs import fig5 as fig5_config  # pylint: disable=g-import-not-at-top
  from rl_align import train  # pylint: disable=g-import-not-at-top

  with open(os.path.join(device_run, "run.json")) as f:
    assert json.load(f)["status"] == "finished"
  c = fig5_config.get_config("tiny")
  c.arms = ("scratch", "pretrained", "covariance", "covariance_L2")
  c.train.checkpoint_every_secs = 0.0
  wd = str(tmp_path / "crashed")
  real_event = train._Run._event
  programs = []

  class Crash(Exception):
    pass

  def crashing(self, step, means):
    real_event(self, step, means)
    programs.append(len(self.calls))
    if len(self.calls) > 1 and step >= 10:
      raise Crash()

  monkeypatch.setattr(train._Run, "_event", crashing)
  with pytest.raises(Crash):
    transfer_runner.run(c, wd)
  assert max(programs) == 4  # the four arms: one program of 4 x 2 members
  monkeypatch.setattr(train._Run, "_event", real_event)
  again = transfer_runner.run(c, wd)
  assert _without_runtimes(again["arms"]) == _without_runtimes(_results(device_run)["arms"])
