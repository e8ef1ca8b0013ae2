"""Tests of rl_align.eigenmap's analysis and its runner: diverged seeds never enter the science."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rl_align import alignment, eigenmap, models, seeds, train
from rl_align.engine import config as engine_config
from rl_align.runners import eigenmap as runner

_POOLED = ("f_pooled", "misalignment_pooled_eigenbasis", "misalignment_pooled_random_basis")


def _kernels(s=3, d=6, h=16):
  return np.random.default_rng(0).normal(size=(s, d, h)) * 0.2


def _basis(d=6):
  lam = np.linspace(6.0, 0.2, d)  # sigma up to 2.4: the plateau check has values
  return lam, alignment.random_basis(1, d)


def test_a_diverged_seed_leaves_every_pooled_number_as_without_it():
  lam, V = _basis()
  kernels = _kernels()
  kernels[1] *= 1e14  # absurd but finite, as a frozen diverged seed
  with_flag = eigenmap.summarize(kernels, lam, V, floor_trials=2, diverged=[False, True, False])
  without = eigenmap.summarize(kernels[[0, 2]], lam, V, floor_trials=2)
  # The same seeds go through the same float64 code: the numbers are identical, not just close.
  for k in _POOLED:
    np.testing.assert_array_equal(with_flag[k], without[k])
  for k in ("misalignment_floor", "misalignment_pooled_floor"):
    assert with_flag[k] == without[k]
  assert with_flag["num_diverged"] == 1 and with_flag["f"].shape == (3, 6)  # per-seed rows kept
  assert with_flag["f"][1].max() > 1e12
  ref = {"sigma": np.sqrt(lam)[::-1], "f": np.full(6, 0.3)}
  without["diverged"] = [False, False]
  assert eigenmap.shape_checks(with_flag, 6, ref) == eigenmap.shape_checks(without, 6, ref)


def test_all_seeds_diverged_is_reported_instead_of_numbers():
  lam, V = _basis()
  out = eigenmap.summarize(_kernels(s=2) * 1e14, lam, V, floor_trials=2, diverged=[True, True])
  assert "all 2 seeds diverged" in out["error"] and np.all(np.isnan(out["f_pooled"]))
  checks = eigenmap.shape_checks(out, 6, None)
  assert list(checks) == ["error"] and "all 2 seeds diverged" in checks["error"]
  snaps = [dict(out, step=0)]
  assert np.isnan(eigenmap.misalignment_over_training(snaps)[0]["eigenbasis_mean"])


def _analysis_config():
  return ml_collections.ConfigDict(
    {"analysis": {"basis_seed": 0, "centered": False, "reduce": "sum"}}
  )


def test_engine_flags_reach_the_analysis(tmp_path):
  """Seed 1 starts from weights scaled by 1e20: its loss overflows, the engine freezes and flags it,
  and the runner's analysis pools seed 0 alone (snapshots and early-time fits included)."""
  d = 5
  x = np.random.default_rng(0).normal(size=(64, d)).astype(np.float32)
  model = models.DenseNet(widths=(8,), num_classes=3)
  keys = jax.random.split(jax.random.key(0), 2)
  init = jax.tree.map(
    np.asarray, jax.vmap(lambda k: model.init(k, jnp.zeros((1, d))))(keys)["params"]
  )
  init = jax.tree.map(
    lambda a: a * np.array([1.0, 1e20], np.float32).reshape((2,) + (1,) * (a.ndim - 1)), init
  )
  cfg = engine_config.default_config()
  cfg.update(
    num_seeds=2,
    num_steps=4,
    batch_size=16,
    train_eval_examples=32,
    snapshot_steps=(0, 4),
    log_every_steps=2,
  )
  res = train.train(model, cfg, x, seeds.random_labels(0, [0, 1], len(x), 3), init_params=init)
  assert res.diverged.tolist() == [False, True]
  lam, V = alignment.eigh_desc(np.cov(x.T))
  out = runner.analyse(_analysis_config(), res, lam, V)
  alone = eigenmap.summarize(models.first_layer_kernel(res.params)[:1], lam, V)
  np.testing.assert_array_equal(out["f_pooled"], alone["f_pooled"])
  assert out["num_diverged"] == 1 and len(out["f"]) == 2
  snap4 = eigenmap.summarize(res.snapshots[4]["first_kernel"][:1], lam, V, floor_trials=2)
  assert out["early_time"][0]["c"] == eigenmap.early_time_fit(snap4["f"], lam)["c"]


def test_an_all_diverged_panel_writes_the_error_in_its_checks(tmp_path):
  """The README's example: fig20 right, tiny, learning rate 1e30 (every seed diverges)."""
  c = ml_collections.ConfigDict(
    {
      "data": {
        "name": "gaussian",
        "kwargs": {"n": 256, "stds": (0.5, 1.0, 2.0, 3.0), "seed": 0, "num_classes": 4},
        "data_dir": "",
        "standardize": False,
      },
      "labels": "random",
      "num_classes": 4,
      "model": {"name": "dense", "widths": (8,), "num_classes": 4},
      "train": engine_config.default_config(),
      "analysis": {
        "centered": False,
        "reduce": "sum",
        "basis_seed": 0,
        "patch_size": 3,
        "population_covariance": True,
      },
      "figure_name": "f.png",
      "panels": {"right": {"title": "tiny"}},
    }
  )
  c.train.update(
    num_seeds=2,
    num_epochs=1,
    batch_size=64,
    learning_rate=1e30,
    snapshot_epochs=(0, 1),
    train_eval_examples=64,
  )
  summary = runner.run_panels(c, str(tmp_path))
  assert list(summary["right"]["checks"]) == ["error"]
  assert "all 2 seeds diverged" in summary["right"]["checks"]["error"]
  assert summary["right"]["num_diverged"] == 2
  with open(os.path.join(tmp_path, "right", "results.json")) as f:
    res = json.load(f)
  assert res["f_pooled"] == [None] * 4 and res["diverged"] == [True, True]  # nan -> null
  assert os.path.getsize(os.path.join(tmp_path, "f.png")) > 1000


def test_plots_draw_the_same_bytes_each_time(tmp_path):
  """Figure objects without pyplot: a second drawing of the same results gives the same file."""
  from rl_align.plots import eigenmap as eigenmap_plots  # pylint: disable=g-import-not-at-top

  lam, V = _basis()
  res = eigenmap.summarize(_kernels(), lam, V, floor_trials=2, diverged=[False, True, False])
  paths = [
    eigenmap_plots.plot_panels([res], ["alone"], [None], str(tmp_path / f"t{i}.png"))
    for i in range(2)
  ]
  assert open(paths[0], "rb").read() == open(paths[1], "rb").read()
