"""The honest peak (rl_align.machine) and the FLOP accounting (rl_align.flops, run.json's
`accounting`, the binaries' final `done:` line).  Hand counts only: no timing thresholds."""

import json
import math

from absl import logging
import jax
import numpy as np
import pytest

from experiments import cli
from experiments.configs import fig20
from rl_align import flops
from rl_align import machine
from rl_align.engine import config as engine_config
from rl_align.engine import programs
from rl_align import models
from rl_align import progress
from rl_align.runners import eigenmap as eigenmap_runner


def _dense_step_flops(d, widths, k, b):
  """Hand count of one SGD step of a dense net d -> widths -> k on a batch of b: every layer's
  forward matmul and weight gradient (2 x b x fan_in x fan_out each), and the input gradient of
  every layer but the first (x needs none).  That is the well-known 6 x weights x b, less the first
  layer's input gradient (2 x b x d x widths[0]); biases add no matmul."""
  dims = (d,) + tuple(widths) + (k,)
  layers = list(zip(dims[:-1], dims[1:]))
  weights = sum(i * o for i, o in layers)
  return 6 * b * weights - 2 * b * layers[0][0] * layers[0][1]


def test_peak_records_every_method_per_size_and_their_max():
  got = machine.matmul_peak(sizes=(128, 256), repeats=2, budget_s=math.inf)  # nothing skipped
  want_methods = {"jax_one_device"}
  if len(jax.local_devices()) > 1:
    want_methods.add("jax_all_devices")
  if jax.default_backend() == "cpu":
    want_methods.add("numpy")
  assert set(got["detail"]) == want_methods
  rates = [(r, m, int(n)) for m, d in got["detail"].items() for n, r in d.items()]
  assert all(set(d) == {"128", "256"} for d in got["detail"].values()), got
  assert all(r > 0 and math.isfinite(r) for r, _, _ in rates)
  best = max(rates)
  assert round(got["gflops"], 1) == best[0] and (got["method"], got["n"]) == best[1:]


def test_peak_skips_sizes_past_the_budget_but_times_every_method_once():
  got = machine.matmul_peak(sizes=(64, 4096), repeats=1, budget_s=0.0)
  assert all(list(d) == ["64"] for d in got["detail"].values())


def test_engine_step_flops_equal_the_hand_count_of_a_dense_net():
  cfg = engine_config.default_config()
  cfg.update(num_seeds=2, batch_size=16, num_epochs=1, optimizer="momentum")
  model = models.DenseNet(widths=(12, 8), num_classes=5)
  eng = programs.Engine(model, cfg, x_shape=(64, 7), n_members=2)
  assert eng.step_flops == _dense_step_flops(7, (12, 8), 5, 16)


def test_ledger_counts_the_calls_that_carry_it():
  """train.recorded hands its ledger to every call of its runner, explicitly: calls of another
  runner (or none) are not counted."""
  from rl_align import train  # pylint: disable=g-import-not-at-top

  x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
  cfg = engine_config.default_config()
  cfg.update(num_seeds=2, batch_size=8, num_epochs=1)
  model = models.DenseNet(widths=(4,), num_classes=2)
  labels = np.zeros(32, np.int32)

  def runner():
    res = yield train.call(model, cfg, x, labels, name="a")
    yield train.call(model, cfg, x, labels, name="b")
    return res

  mine, other = flops.Ledger(), flops.Ledger()
  train.drive(train.recorded(runner(), mine))
  assert [r["name"] for r in mine.records] == ["a", "b"] and not other.records
  assert mine.total == 2 * mine.records[0]["step_flops"] * 4 * 2  # 2 calls x 4 steps x 2 seeds


def test_phases_bill_compilation_apart_and_sum_the_wall_time():
  ticks = iter([0.0, 2.0, 10.0, 13.0])  # two phases: 2 s and 3 s of wall time
  ph = progress.Phases(clock=lambda: next(ticks))
  fresh = jax.jit(lambda a: a * 3.0 + 1.0)  # a new program: compiled inside the first phase
  with ph("train"):
    fresh(jax.numpy.ones(7)).block_until_ready()
  compiled = ph.seconds.get("compile", 0.0)
  assert 0 < compiled < 2.0
  assert ph.seconds["train"] == pytest.approx(2.0 - compiled)
  with ph("train"):
    fresh(jax.numpy.ones(7)).block_until_ready()  # cached: nothing compiled
  assert ph.seconds["compile"] == compiled and ph.seconds["train"] == pytest.approx(5.0 - compiled)


def test_accounting_adds_other_time_and_the_training_steps_rate():
  acc = flops.accounting(6e11, 10.0, 100.0, {"train": 4.0, "compile": 1.0, "eval": 2.0})
  assert acc["phases"] == {"compile": 1.0, "eval": 2.0, "train": 4.0, "other": 3.0}
  assert acc["gflops_per_s"] == pytest.approx(60.0) and acc["fraction_of_peak"] == pytest.approx(
    0.6
  )
  assert acc["train_gflops_per_s"] == pytest.approx(150.0)
  assert acc["train_fraction_of_peak"] == pytest.approx(1.5)
  line = flops.summary_line(acc)
  assert (
    "train 4 s, other 3 s, eval 2 s, compile 1 s" in line
    and "alone 150.0 GFLOP/s (150% of peak)" in line
  )
  ledger = flops.Ledger()
  ledger.record("a", 1.0, 1, 1, seconds={"train": 1.5})
  ledger.record("b", 1.0, 1, 1, seconds={"train": 0.5, "eval": 1.0})
  assert ledger.seconds == {"train": 2.0, "eval": 1.0}


@pytest.mark.slow
def test_a_tiny_binary_run_records_its_flops_rate_and_fraction_of_peak(tmp_path, monkeypatch):
  lines = []
  log = lambda fmt, *a, **k: lines.append(str(fmt) % a if a else str(fmt))
  monkeypatch.setattr(logging, "info", log)
  config = fig20.get_config("right,tiny")
  cli.run_main(eigenmap_runner.run_panels, config, str(tmp_path), argv=["fig20", "right,tiny"])
  rec = json.load(open(tmp_path / "run.json"))
  acc = rec["accounting"]
  # fig20 right tiny: x in R^30, widths (64, 32), 10 classes, n 512, batch 128: 4 steps/epoch,
  # 2 epochs, 2 seeds, one train call.
  t = config.train
  steps = (512 // t.batch_size) * t.num_epochs
  want = _dense_step_flops(30, (64, 32), 10, t.batch_size) * steps * t.num_seeds
  assert acc["flops"] == want
  got_calls = {k: {f: v for f, v in c.items() if f != "seconds"} for k, c in acc["calls"].items()}
  assert got_calls == {"train": {"calls": 1, "flops": want, "model_steps": steps * t.num_seeds}}
  # Where the time went: the engine's phases, and the rest of the wall time as "other".
  phases = acc["phases"]
  assert {"train", "eval", "log", "snapshot", "checkpoint", "other"} <= set(phases), phases
  assert all(v >= 0 for v in phases.values()) and phases["train"] > 0
  assert sum(phases.values()) == pytest.approx(acc["wall_s"], abs=0.01)
  assert acc["calls"]["train"]["seconds"]["train"] == pytest.approx(phases["train"], abs=1e-3)
  assert acc["train_gflops_per_s"] == pytest.approx(want / phases["train"] / 1e9, rel=1e-3)
  peak = rec["machine"]["fp32_matmul_gflops"]
  assert peak == max(r for d in rec["machine"]["fp32_matmul_detail"].values() for r in d.values())
  assert acc["peak_gflops"] == peak * jax.process_count()
  assert acc["gflops_per_s"] == pytest.approx(want / acc["wall_s"] / 1e9)
  assert acc["fraction_of_peak"] == pytest.approx(acc["gflops_per_s"] / acc["peak_gflops"])
  assert abs(acc["wall_s"] - rec["wall_s"]) < 0.01
  done = [l for l in lines if l.startswith("done: ")]
  assert done == [flops.summary_line(acc)] and done[0] == lines[-1]
  print(done[0])  # shown with -s
  assert "% of the measured peak" in done[0] and "training steps' matmul/conv FLOPs" in done[0]
  # A rerun resumes from the final checkpoint: no step runs, none is counted.
  cli.run_main(eigenmap_runner.run_panels, config, str(tmp_path), argv=["fig20", "right,tiny"])
  rec = json.load(open(tmp_path / "run.json"))
  assert rec["accounting"]["flops"] == 0 and rec["accounting"]["calls"]["train"]["model_steps"] == 0
  assert rec["earlier_runs"][0]["accounting"]["flops"] == want
