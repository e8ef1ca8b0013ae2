"""The claims report (rl_align/claims, experiments/report.py) on tiny runs of every binary.

The tiny configs run once per module, in this process, through the binaries' entry
`experiments.cli.run_main` (config.json, results.json, run.json as a user gets them); the report is
built from those workdirs; its verdicts equal the ones each runner stored (one source of truth), and
its numbers are recomputed here from results.json.  The rules themselves, on synthetic results that
reach every verdict, are tests/test_claims.py.
The same workdirs hold what the misalignment and filters binaries write (the eigenvalue-map,
transfer and specialization binaries run as subprocesses in their own test files), and each
binary's `__main__` is checked to launch the runner run here.
"""

import importlib
import json
import os
import runpy
import shutil

import numpy as np
import pytest

from experiments import cli
from experiments import report as report_cli
from rl_align import claims
from tests.helpers import run_module


def _fewer_arms(c):  # the Fig 5 and section 2.5 arms; pca_whitening / f_only test no claim here
  c.arms = (
    "scratch",
    "pretrained",
    "pretrained_no_rescaling",
    "covariance",
    "covariance_rotated",
    "covariance_L2",
  )
  return c


def _one_k_one_length(c):  # both widths (the widening claim), one K and upstream length
  c.sweep.update({"num_random_classes": (6,), "upstream_steps": (20,)})
  return c


# name -> (config module, argument, runner module.function, binary, shrink)
RUNS = {
  "fig2": ("fig2", "random,real,tiny", "eigenmap.run_misalignment", "misalignment", None),
  "fig20": ("fig20", "right,tiny", "eigenmap.run_panels", "eigenvalue_map", None),
  "fig4": ("fig4_cnn", "random,real,tiny", "eigenmap.run_panels", "eigenvalue_map", None),
  "fig3": ("fig3", "tiny", "filters.run", "filters", None),
  "fig5": ("fig5", "tiny", "transfer.run", "transfer", _fewer_arms),
  "spec": ("specialization", "tiny", "specialization.run", "specialization", _one_k_one_length),
}


def _fig1_from_fig5(fig5_dir: str, wd: str) -> None:
  """A Fig 1 (negative transfer) workdir holding the tiny transfer run's results (the same runner
  and schema; the VGG16 of fig1.py has no tiny config): fig1.py's config, its command line."""
  from experiments.configs import fig1  # pylint: disable=g-import-not-at-top
  from rl_align import results  # pylint: disable=g-import-not-at-top

  os.makedirs(wd)
  res = json.load(open(os.path.join(fig5_dir, "results.json")))
  shutil.copy(os.path.join(fig5_dir, res["figure"]), os.path.join(wd, "fig1.png"))
  res["figure"] = "fig1.png"
  res["claims"] = {"figure": "fig1", "direction": "negative", "verdicts": {}}
  results.write_json(wd, "results.json", res)
  results.write_json(wd, "config.json", fig1.get_config("negative"))
  run = json.load(open(os.path.join(fig5_dir, "run.json")))
  run["argv"] = [
    "experiments/transfer.py",
    "--config=experiments/configs/fig1.py:negative",
    f"--workdir={wd}",
  ]
  results.write_json(wd, "run.json", run)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("report")
  out = {}
  for name, (module, arg, runner, binary, shrink) in RUNS.items():
    config = importlib.import_module(f"experiments.configs.{module}").get_config(arg)
    config = shrink(config) if shrink else config
    mod, fn = runner.split(".")
    fn = getattr(importlib.import_module(f"rl_align.runners.{mod}"), fn)
    wd = str(root / name)
    cli.run_main(
      fn,
      config,
      wd,
      argv=[
        f"experiments/{binary}.py",
        f"--config=experiments/configs/{module}.py:{arg}",
        f"--workdir={wd}",
      ],
    )
    out[name] = wd
  out["fig1"] = str(root / "fig1")
  _fig1_from_fig5(out["fig5"], out["fig1"])
  return out


def _rows(wd):
  return [r for run in report_cli.load_workdir(wd) for r in claims.rows(run)]


def _loaded(wd):
  return report_cli.load_workdir(wd)[0]


# ----------------------------------------------------------------------------------------------
# The report built from the tiny runs.

EXPECTED = {  # figure -> claim fragments, one row each (descriptive and diagnostic rows included)
  "fig2": ["(random labels)", "(real labels)"],
  "fig20": ["(right panel)"],
  "fig4": [
    "random labels: f flat early",
    "random labels: magnitude",
    "real labels: f grows",
    "real labels: magnitude",
  ],
  "fig3": ["eigenvectors are the patch PCs"],
  "fig5": [
    "pretrained_no_rescaling trains faster than scratch",
    "pretrained trains faster than scratch",
    "covariance trains faster than scratch",
    "accounts for most of the pretrained advantage",
    "weight scaling",
    "covariance trains faster than covariance_rotated",
    "covariance_L2 trains faster than covariance",
    "the pretrained network's f_dense_0 is resolved",
  ],
  "fig1": [
    "negative transfer: pretrained trains slower",
    "negative transfer: pretrained_no_rescaling trains slower",
  ],
  "spec": ["activity drops at the switch", "widening the later layers"],
}


@pytest.mark.slow
def test_report_has_a_row_per_expected_claim_and_a_line_per_run(workdirs, tmp_path, capsys):
  out = tmp_path / "sub" / "report.md"
  names = list(EXPECTED)
  assert report_cli.main([workdirs[n] for n in names] + [f"--out={out}"]) == 0
  text = out.read_text()
  table = [l for l in text.splitlines() if l.startswith("| ") and not l.startswith("| Figure")]
  assert len(table) == sum(len(v) for v in EXPECTED.values())
  for name in names:
    mine = [l for l in table if l.rstrip().endswith(f"| {workdirs[name]} |")]
    for fragment in EXPECTED[name]:
      assert sum(fragment in l for l in mine) == 1, (name, fragment)
  for line in table:
    cells = line.split(" | ")
    assert cells[7].strip("*") in claims.VERDICTS, line
    assert cells[4].isdigit() or cells[4] == "—", line  # n
    link = line.split("[png](")[1].split(")")[0]  # every tiny run draws its figure
    assert (out.parent / link).exists(), link
  runs = text.split("## Runs")[1].strip().splitlines()
  assert len(runs) == len(names)
  order = [next(n for n in names if f"`{workdirs[n]}`" in l) for l in runs]
  assert order == sorted(order, key=lambda n: workdirs[n])
  for name in names:  # one line per run, in the order of their names
    (line,) = [l for l in runs if f"`{workdirs[name]}`" in l]
    module = RUNS.get(name, ("fig1", "negative"))[:2]
    assert f"--config=experiments/configs/{module[0]}.py:{module[1]}" in line, line
    assert "python -m experiments." in line and "GFLOP/s" in line and "runtime" in line
  assert "wrote" in capsys.readouterr().out


@pytest.mark.slow
def test_report_verdicts_are_the_ones_each_runner_stored(workdirs):
  """One source of truth: results.json's claims.verdicts (the runner's judgement) and the
  report's rows come from the same rules."""
  for name in ("fig2", "fig20", "fig4", "fig3", "fig5", "spec"):
    stored = json.load(open(os.path.join(workdirs[name], "results.json")))["claims"]["verdicts"]
    rows = _rows(workdirs[name])
    assert stored == {r.id: r.verdict for r in rows}, name


@pytest.mark.slow
def test_fig5_rows_are_recomputed_from_results_json(workdirs):
  """The whole-curve paired interval of the pretrained arm, by hand from results.json (Student-t,
  n - 1 degrees of freedom, every finished seed: the tiny upstream is gated per seed)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top

  res = json.load(open(os.path.join(workdirs["fig5"], "results.json")))
  rows = {r.id: r for r in _rows(workdirs["fig5"])}
  a, s = (np.asarray(res["arms"][k]["train_accuracy"]) for k in ("pretrained", "scratch"))
  later = np.asarray(res["arms"]["scratch"]["iterations"]) > 0
  d = (a[:, later] - s[:, later]).mean(1)
  half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
  row = rows["fig5.pretrained_faster"]
  assert (
    f"every finished seed (no gate): whole curve {claims.core.fmt(d.mean())} ["
    f"{claims.core.fmt(d.mean() - half)}, {claims.core.fmt(d.mean() + half)}] (n=2)"
    in row.ours
    or f"whole curve pretrained−scratch {claims.core.fmt(d.mean())} [" in row.ours
  )
  assert row.verdict in (claims.core.UNDERPOWERED, claims.core.REGIME_NOT_REACHED)  # 2 seeds
  assert "random-label fit" in row.gate and "of the run" in row.gate


@pytest.mark.slow
def test_fig20_rmse_is_the_runners_own(workdirs):
  (row,) = _rows(workdirs["fig20"])
  rmse = json.load(open(os.path.join(workdirs["fig20"], "results.json")))["right"]["checks"][
    "rmse_vs_paper"
  ]
  assert f"RMSE of the seed-mean f {rmse:.3f}" in row.ours
  # 2 seeds: underpowered, or (the tiny run barely fits its random labels) outside the regime
  assert (row.verdict, row.n) in (
    (claims.core.UNDERPOWERED, 2),
    (claims.core.REGIME_NOT_REACHED, 0),
  )


@pytest.mark.slow
def test_every_run_records_its_figure(workdirs):
  want = {
    "fig2": "fig2",
    "fig20": "fig20",
    "fig4": "fig4",
    "fig3": "fig3",
    "fig5": "fig5",
    "fig1": "fig1",
    "spec": "specialization",
  }
  for name, fig in want.items():
    assert claims.figure_of(_loaded(workdirs[name])) == fig
  argv = ["/x/experiments/transfer.py", "--config=experiments/configs/fig1.py:positive,fmnist"]
  assert claims.markdown.command(argv) == (
    "python -m experiments.transfer --config=experiments/configs/fig1.py:positive,fmnist"
  )


@pytest.mark.slow
def test_misalignment_binary_writes_curves_and_figure(workdirs):
  summary = json.load(open(os.path.join(workdirs["fig2"], "results.json")))
  for panel in ("random", "real"):
    curve = summary[panel]["misalignment_over_training"]
    assert len(curve) >= 3 and curve[0]["step"] == 0
  assert os.path.exists(os.path.join(workdirs["fig2"], "fig2_misalignment.png"))


@pytest.mark.slow
def test_filters_binary_writes_overlaps_and_figure(workdirs):
  res = json.load(open(os.path.join(workdirs["fig3"], "results.json")))
  assert set(res["subspace_overlap"]) == {"1", "3", "5", "10"}
  assert res["num_filters_pooled"] == 2 * 16
  assert len(res["best_match_pc"]) == len(res["best_match_cos"]) == 10
  assert os.path.exists(os.path.join(workdirs["fig3"], "fig3_eigenvectors.png"))


@pytest.mark.parametrize("binary, runner", sorted({(r[3], r[2]) for r in RUNS.values()}))
def test_each_binary_launches_the_runner_run_here(binary, runner, monkeypatch):
  """The binaries' `__main__` (flag definitions skipped: absl's flags are process-wide) hands
  `cli.launch` the runner these tests run through `run_main`."""
  launched = []
  monkeypatch.setattr(cli, "define_config_flags", lambda example: None)
  monkeypatch.setattr(cli, "launch", lambda fn, *args, **kw: launched.append(fn))
  runpy.run_module(f"experiments.{binary}", run_name="__main__")
  mod, fn = runner.split(".")
  assert launched == [getattr(importlib.import_module(f"rl_align.runners.{mod}"), fn)]


# ----------------------------------------------------------------------------------------------
# Bad input: one `error: ... Fix: ...` line, exit code 2.


def _one_error_line(capsys, argv):
  with pytest.raises(SystemExit) as e:
    report_cli.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and "Fix:" in err[0], err
  return err[0]


def test_bad_input_is_one_error_line(tmp_path, capsys):
  assert "does not exist" in _one_error_line(capsys, [str(tmp_path / "none")])
  assert "no results.json" in _one_error_line(capsys, [str(tmp_path)])
  (tmp_path / "results.json").write_text(json.dumps({"accuracy": 1.0}))
  (tmp_path / "config.json").write_text(json.dumps({"figure_name": "other.png"}))
  assert "does not say which figure" in _one_error_line(capsys, [str(tmp_path)])
  (tmp_path / "results.json").write_text(json.dumps({"claims": {"figure": "fig99"}}))
  assert "no claims are registered for figure 'fig99'" in _one_error_line(capsys, [str(tmp_path)])
  assert "Fix: python -m experiments.report" in _one_error_line(capsys, ["--out=x.md"])


@pytest.mark.slow
def test_binary_exit_code_and_sweep_workdir(workdirs, tmp_path):
  sweep = tmp_path / "sweep"
  shutil.copytree(workdirs["fig3"], sweep / "points" / "train.seed=0")
  (sweep / "points" / "train.seed=1").mkdir()  # unfinished point
  (sweep / "sweep_spec.json").write_text("{}")
  out = tmp_path / "r.md"
  proc = run_module("experiments.report", str(sweep), f"--out={out}", timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "1 of 2 sweep points are not finished" in proc.stderr
  assert f"| {sweep}/points/train.seed=0 |" in out.read_text()
  proc = run_module("experiments.report", str(tmp_path / "none"), timeout=300)
  assert proc.returncode == 2 and proc.stderr.startswith("error: ")
  assert "Traceback" not in proc.stderr


def test_readme_markers_take_the_report(tmp_path, capsys):
  readme = tmp_path / "README.md"
  readme.write_text(
    "# top\n<!-- fmnist-report:begin -->\nold table\n<!-- fmnist-report:end -->\ntail\n"
  )
  out = report_cli.into_markers(str(readme), "| new | table |\n")
  assert out == (
    "# top\n<!-- fmnist-report:begin -->\n| new | table |\n<!-- fmnist-report:end -->\ntail\n"
  )
  readme.write_text("# no markers\n")
  with pytest.raises(SystemExit) as info:
    report_cli.into_markers(str(readme), "x")
  assert info.value.code == 2 and "fmnist-report:begin" in capsys.readouterr().err


@pytest.mark.slow
def test_a_kept_run_gives_the_same_rows_and_its_command_names_workdirs(workdirs, tmp_path):
  """experiments.keep copies the small files only; the report reads the kept copy as the run."""
  from experiments import keep  # pylint: disable=g-import-not-at-top

  dest = tmp_path / "kept" / "fig5_tiny"
  copied = keep.keep(workdirs["fig5"], str(dest))
  assert "results.json" in copied and not any(c.endswith(".npz") or "_state" in c for c in copied)
  rec = json.loads((dest / "run.json").read_text())
  assert "--workdir=workdirs/fig5_tiny" in rec["argv"] and "cwd" not in rec
  a = [(r.id, r.verdict, r.ours) for r in _rows(workdirs["fig5"])]
  b = [(r.id, r.verdict, r.ours) for r in _rows(str(dest))]
  assert a == b
