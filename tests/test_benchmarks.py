"""Smoke tests of benchmarks/train_throughput.py: the CLI runs and writes sane JSON.

No timing thresholds: the numbers only have to be positive and finite.  Without torch (CI installs
only `.[test]`) every test runs except those that compare against PyTorch itself (the twin's
logits, the torch.func ensemble's step against the per-seed SGD loop); the missing torch and
missing CUDA errors are tested with torch hidden or replaced.  With torch the CLI test runs every
PyTorch arm (the loop, torch_func and torch_compile) at tiny size.
"""

import json
import os
import types

import numpy as np
import pytest

from benchmarks import train_throughput as tt
from tests.helpers import run_module, run_python
from tests.tolerances import assert_close, f64_tol


def _torch_installed():
  return tt._torch() is not None  # pylint: disable=protected-access


@pytest.mark.slow
def test_cli_writes_json_with_headline_and_arms(tmp_path):
  out = tmp_path / "bench.json"
  # torch_compile's step is the torch_func step under torch.compile: its equality with the loop is
  # tested in-process below; here the CLI runs the arms that take its other paths (~10 s less).
  torch_arms = ("torch", "torch_func") if _torch_installed() else ()
  arms = ",".join(("engine", "naive_jax") + torch_arms)
  proc = run_module(
    "benchmarks.train_throughput",
    "--model=fig20_dense",
    "--seeds=2",
    "--steps=1",
    "--repeats=1",
    "--batch_size=8",
    "--num_examples=32",
    "--peak_size=128",
    f"--arms={arms}",
    "--layout=auto,map",
    f"--json={out}",
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(out.read_text())
  for key in (
    "model_steps_per_s",
    "gflops_per_s",
    "peak_gflops_per_s",
    "peak_fraction",
    "flops_per_model_step",
  ):
    assert np.isfinite(res[key]) and res[key] > 0, key
  assert res["headline"]["arm"] == "engine"
  names = [(r["arm"], r["requested_layout"]) for r in res["arms"]]
  assert ("engine", "auto") in names and ("engine", "map") in names and ("naive_jax", "") in names
  for row in res["arms"]:
    for key in ("model_steps_per_s", "gflops_per_s", "s_per_model_step", "vs_naive_jax"):
      assert np.isfinite(row[key]) and row[key] > 0, (row["arm"], key)
    assert row["seeds"] == 2 and len(row["rounds_s"]) == 1
  if _torch_installed():  # the agreement itself is test_torch_twin_matches_flax_model's
    torch_row = next(r for r in res["arms"] if r["arm"] == "torch")
    assert np.isfinite(torch_row["max_logit_diff_vs_jax"])
    rows = {r["arm"]: r for r in res["arms"]}
    assert set(torch_arms) <= set(rows)
    for arm in torch_arms:
      assert np.isfinite(rows[arm]["last_loss"]) and rows[arm]["torch_threads"] >= 1, arm
    fastest = max(torch_arms, key=lambda a: rows[a]["model_steps_per_s"])
    best = res["best_torch"]["2"]
    assert best["arm"] == fastest
    assert best["model_steps_per_s"] == rows[fastest]["model_steps_per_s"]
    engine = next(r for r in res["arms"] if r["arm"] == "engine")  # the first: the headline
    assert best["engine_vs_best_torch"] == engine["model_steps_per_s"] / best["model_steps_per_s"]
    assert engine["vs_best_torch"] == best["engine_vs_best_torch"]
    assert f"vs the best PyTorch arm ({fastest})" in proc.stdout
  assert "engine" in proc.stdout and "vs torch" in proc.stdout


_HIDE_TORCH = (
  "import runpy, sys; sys.modules['torch'] = None; sys.argv[0] = 'train_throughput'; "
  "runpy.run_module('benchmarks.train_throughput', run_name='__main__')"
)


@pytest.mark.slow
def test_torch_arm_without_torch_names_the_fix():
  # torch hidden (import fails) whether or not it is installed: the flag check runs before any
  # compile, and says what is missing and how to fix it in one `error:` line with exit code 2, as
  # the experiment binaries do (no traceback, no usage text).
  proc = run_python(
    "-c",
    _HIDE_TORCH,
    "--model=fig20_dense",
    "--seeds=2",
    "--steps=1",
    "--repeats=1",
    "--batch_size=8",
    "--num_examples=32",
    "--arms=engine,torch_func,torch_compile",
    timeout=300,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  assert "PyTorch is not installed" in lines[0] and 'pip install -e ".[bench]"' in lines[0]
  assert "--arms has torch_func,torch_compile" in lines[0]
  assert not proc.stdout.strip(), proc.stdout[-2000:]  # nothing was timed


@pytest.mark.skipif(
  not _torch_installed(), reason="compares against PyTorch itself: needs the [bench] extra (torch)"
)
@pytest.mark.parametrize("name", ["fig20_dense", "paper_cnn", "small_cnn"])
def test_torch_twin_matches_flax_model(name):
  # The torch arm trains the same function as the JAX arms: copy the init, compare logits.  Both
  # sides in float64 (in float32 the any-order bound of tests/tolerances.py is ~1 at these widths):
  # the model on |x|, |params| bounds sum |term| along the chain of fan-ins (+ small_cnn's 32x32
  # average pool), so a wrong flatten order or layer mapping (errors ~ the logits) fails by >1e9x.
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from rl_align import models  # pylint: disable=g-import-not-at-top

  kw = dict(tt.WORKLOADS[name]["model"])
  if name == "paper_cnn":
    kw["features"] = 8
  model = models.build(kw)
  kw.pop("name")
  shape = tuple(tt.WORKLOADS[name]["input"])
  x = np.random.default_rng(0).standard_normal((2,) + shape)  # float64
  params = model.init(jax.random.key(0), x[:1].astype(np.float32))["params"]
  net = tt.torch_model(name, kw)
  tt.copy_params_to_torch(net, params, shape)
  net = net.double()  # float32 weights -> float64, exactly
  with torch.no_grad():
    got = net(torch.from_numpy(x if x.ndim == 2 else x.transpose(0, 3, 1, 2).copy())).numpy()
  with jax.enable_x64(True):
    p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    want = np.asarray(model.apply({"params": p64}, jnp.asarray(x)))
    mag = np.asarray(model.apply({"params": jax.tree.map(jnp.abs, p64)}, jnp.abs(jnp.asarray(x))))
  assert got.dtype == want.dtype == np.float64
  kernels = [np.shape(p["kernel"]) for p in params.values()]
  chain = sum(int(np.prod(k[:-1])) for k in kernels) + 2 * len(kernels)
  chain += 32 * 32 if name == "small_cnn" else 0
  assert_close(got, want, f64_tol(mag, chain), name)


@pytest.mark.skipif(
  not _torch_installed(), reason="compares against PyTorch itself: needs the [bench] extra (torch)"
)
@pytest.mark.parametrize("compiled", [False, True], ids=["torch_func", "torch_compile"])
def test_torch_ensemble_step_equals_the_per_seed_sgd_loop(compiled):
  # The torch_func / torch_compile arms' step (stacked params, vmap(grad_and_value), SGD momentum
  # on the stack) against torch.optim.SGD on each seed's own net, 3 seeds x 3 steps, each seed its
  # own batches.  float64: the two differ only in summation order, < 1e-13 relative; a seed mixed
  # up, a missing momentum term or the wrong learning rate differs by ~1e-3 and more.
  import copy  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  kw, seeds, batch, steps = {"widths": (5, 4), "num_classes": 3}, 3, 4, 3
  nets = []
  for s in range(seeds):
    torch.manual_seed(s)
    nets.append(tt.torch_model("fig20_dense", kw).double())
  rng = np.random.default_rng(0)
  xs = torch.from_numpy(rng.standard_normal((steps, seeds, batch, 30)))
  ys = torch.from_numpy(rng.integers(0, 3, (steps, seeds, batch)))
  want_params, want_losses = [], np.zeros((steps, seeds))
  for s in range(seeds):
    net = copy.deepcopy(nets[s])
    opt = torch.optim.SGD(net.parameters(), lr=tt.LEARNING_RATE, momentum=tt.MOMENTUM)
    for t in range(steps):
      opt.zero_grad(set_to_none=True)
      loss = torch.nn.functional.cross_entropy(net(xs[t, s]), ys[t, s])
      loss.backward()
      opt.step()
      want_losses[t, s] = float(loss)
    want_params.append(dict(net.named_parameters()))
  step = tt.ensemble_step(nets, compiled=compiled)
  params, buffers = torch.func.stack_module_state(nets)
  params = {k: v.detach() for k, v in params.items()}
  momenta = {k: torch.zeros_like(v) for k, v in params.items()}
  got_losses = np.stack(
    [step(params, buffers, momenta, xs[t], ys[t]).detach().numpy() for t in range(steps)]
  )
  assert got_losses.dtype == np.float64
  # Chain of one step: forward 30 + 5 + 4, backward 3 + 4 + 5, the batch mean 4, ~10 elementwise.
  chain = steps * (30 + 5 + 4 + 3 + 4 + 5 + batch + 10)
  assert_close(got_losses, want_losses, f64_tol(np.abs(want_losses).max(), chain), "losses")
  for k, p in params.items():
    want = np.stack([want_params[s][k].detach().numpy() for s in range(seeds)])
    assert_close(p.numpy(), want, f64_tol(np.abs(want).max(), chain), k)
    assert not np.array_equal(want[0], want[1])  # the seeds differ: a mix-up would show


def test_torch_on_cuda_without_cuda_names_the_flag(monkeypatch):
  # torch replaced by a stand-in without CUDA (the check runs before torch computes anything), so
  # this runs with or without torch and on machines that do have CUDA.
  from absl import app  # pylint: disable=g-import-not-at-top

  no_cuda = types.SimpleNamespace(
    set_num_threads=lambda n: None, cuda=types.SimpleNamespace(is_available=lambda: False)
  )
  monkeypatch.setattr(tt, "_torch", lambda: no_cuda)
  x = np.zeros((8, 30), np.float32)
  arm = tt.TorchArm(
    "fig20_dense",
    {"widths": (4,), "num_classes": 10},
    None,
    x,
    np.zeros((1, 8), np.int32),
    1,
    4,
    1,
    1,
    device="cuda",
  )
  with pytest.raises(app.UsageError, match="--torch_device=cpu"):
    arm.setup()


def test_emit_prints_and_writes_numpy_results_atomically(tmp_path, capsys):
  """Every benchmark's --json goes through `benchmarks.output.emit`: numpy values become JSON,
  a missing folder is created, and no temporary file is left beside the result."""
  from benchmarks import output  # pylint: disable=g-import-not-at-top

  out = {"rate": np.float32(1.5), "rows": np.arange(3), "nan": float("nan")}
  path = tmp_path / "new_dir" / "bench.json"
  output.emit(out, str(path))
  want = {"rate": 1.5, "rows": [0, 1, 2], "nan": None}
  assert json.loads(capsys.readouterr().out) == want
  assert json.loads(path.read_text()) == want
  assert os.listdir(path.parent) == ["bench.json"]
  output.emit({"a": 1}, None, echo=False)  # neither printed nor written
  assert capsys.readouterr().out == ""
