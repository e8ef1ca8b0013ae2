"""Smoke tests of benchmarks/train_throughput.py: the CLI runs and writes sane JSON.

No timing thresholds: the numbers only have to be positive and finite.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import train_throughput as tt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _torch_installed():
  return tt._torch() is not None  # pylint: disable=protected-access


def test_cli_writes_json_with_headline_and_arms(tmp_path):
  out = tmp_path / "bench.json"
  arms = "engine,naive_jax,torch" if _torch_installed() else "engine,naive_jax"
  cmd = [sys.executable, "-m", "benchmarks.train_throughput", "--model=fig20_dense",
         "--seeds=2", "--steps=1", "--repeats=1", "--batch_size=8", "--num_examples=32",
         "--peak_size=128", f"--arms={arms}", "--layout=auto,map", f"--json={out}"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(out.read_text())
  for key in ("model_steps_per_s", "gflops_per_s", "peak_gflops_per_s", "peak_fraction",
              "flops_per_model_step"):
    assert np.isfinite(res[key]) and res[key] > 0, key
  assert res["headline"]["arm"] == "engine"
  names = [(r["arm"], r["requested_layout"]) for r in res["arms"]]
  assert ("engine", "auto") in names and ("engine", "map") in names and ("naive_jax", "") in names
  for row in res["arms"]:
    for key in ("model_steps_per_s", "gflops_per_s", "s_per_model_step", "vs_naive_jax"):
      assert np.isfinite(row[key]) and row[key] > 0, (row["arm"], key)
    assert row["seeds"] == 2 and len(row["rounds_s"]) == 1
  if _torch_installed():
    torch_row = next(r for r in res["arms"] if r["arm"] == "torch")
    assert torch_row["max_logit_diff_vs_jax"] < 1e-4   # the same model in both frameworks
  assert "engine" in proc.stdout and "vs torch" in proc.stdout


@pytest.mark.skipif(not _torch_installed(), reason="needs the [bench] extra (torch)")
@pytest.mark.parametrize("name", ["paper_cnn", "small_cnn"])
def test_torch_twin_matches_flax_model(name):
  # The torch arm trains the same function as the JAX arms: copy the init, compare logits.
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from rl_align import models  # pylint: disable=g-import-not-at-top
  kw = dict(tt.WORKLOADS[name]["model"])
  if name == "paper_cnn":
    kw["features"] = 8
  model = models.build(kw)
  kw.pop("name")
  x = np.random.default_rng(0).standard_normal((2, 32, 32, 3), dtype=np.float32)
  params = model.init(jax.random.key(0), x[:1])["params"]
  net = tt.torch_model(name, kw)
  tt.copy_params_to_torch(net, params, x.shape[1:])
  with torch.no_grad():
    got = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(got, np.asarray(model.apply({"params": params}, x)), atol=1e-4)


@pytest.mark.skipif(not _torch_installed(), reason="needs the [bench] extra (torch)")
def test_torch_on_cuda_without_cuda_names_the_flag():
  import torch  # pylint: disable=g-import-not-at-top
  from absl import app  # pylint: disable=g-import-not-at-top
  if torch.cuda.is_available():
    pytest.skip("this machine has CUDA: the cuda arm is valid here")
  x = np.zeros((8, 30), np.float32)
  arm = tt.TorchArm("fig20_dense", {"widths": (4,), "num_classes": 10}, None, x,
                    np.zeros((1, 8), np.int32), 1, 4, 1, 1, device="cuda")
  with pytest.raises(app.UsageError, match="--torch_device=cpu"):
    arm.setup()


def test_dot_conv_flop_count_matches_analytic():
  # Dense 30 -> 16 -> 4, batch 8: forward + weight grads + input grad of the second layer.
  from rl_align import models  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  model = models.DenseNet(widths=(16,), num_classes=4)
  tx, step = tt.naive_step_fn(model)
  params = model.init(jax.random.key(0), jnp.zeros((1, 30)))["params"]
  args = (params, tx.init(params), jnp.ones((8, 30)), jnp.zeros(8, jnp.int32),
          jnp.arange(8, dtype=jnp.int32))
  flops = tt._dot_conv_flops(jax.make_jaxpr(step)(*args).jaxpr)  # pylint: disable=protected-access
  b = 8
  assert flops == 2 * b * (30 * 16 + 16 * 4) * 2 + 2 * b * 16 * 4
