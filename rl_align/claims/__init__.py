"""The claims of the paper a run tests, and their verdicts: one registry of figures, one module of
rules per family of figures, the paper's numbers in one place (`paper`).

A run records which figure it serves: its runner writes ``results["claims"] = {"figure": key,
..., "verdicts": {row id: verdict}}`` (`stamp`, from ``config.claims``), computed by the same rules
the report applies (`rows`), so the two cannot disagree.  Pure logic (numpy and scipy, no I/O):

    from rl_align import claims
    run = {"name": "workdirs/fig5", "results": results, "config": config, "run": run_json,
           "panels": {}}                      # panels: {name: {"results", "config"}} (Figs 2, 4, 20)
    rows = claims.rows(run)                   # [claims.Row]: claim, paper, ours, n, gate, verdict
    text = claims.render([run], rows)         # the markdown table (README "Claims on a real dataset")

Verdicts (`core`): reproduced / partly / not reproduced by the rule in the row; "underpowered"
below 8 seeds; "not evaluable: regime not reached" where the runs did not reach the regime the
claim is about (random labels fitted; upstream memorised with later layers alive); descriptive
rows and diagnostics are shown outside the tally.  Paper: Maennel et al. 2020, "What Do Neural
Networks Learn When Trained With Random Labels?" (arXiv 2006.10455).
"""

from typing import Any, Mapping

from rl_align.claims import core
from rl_align.claims import eigenmaps  # noqa: F401  (registers fig2, fig4, fig20)
from rl_align.claims import filters  # noqa: F401  (registers fig3)
from rl_align.claims import specialization  # noqa: F401  (registers specialization, fig1_search)
from rl_align.claims import transfer  # noqa: F401  (registers fig5, fig1, table1)
from rl_align.claims.core import ReportError, Row, VERDICTS, figures  # noqa: F401
from rl_align.claims.markdown import render, run_line  # noqa: F401


def figure_of(run: Mapping[str, Any]) -> str:
  """The figure key the run's results.json records (``results["claims"]["figure"]``)."""
  key = ((run.get("results") or {}).get("claims") or {}).get("figure")
  if key is None:
    raise ReportError(
      f"{run.get('name', 'the workdir')}: results.json does not say which figure it serves "
      "(no claims.figure: written by an older version). Fix: rerun the binary on that workdir "
      "(finished phases are read back, not retrained) so that it rewrites results.json."
    )
  core.rows_of(key)  # a clear error for a key nothing registers
  return key


def rows(run: Mapping[str, Any]) -> list[Row]:
  """Every claims-table row of one run, by its figure's rules."""
  return core.rows_of(figure_of(run))(run)


def stamp(
  config, results: Mapping[str, Any], panels: Mapping[str, Any] | None = None
) -> dict[str, Any]:
  """The ``claims`` block a runner writes into results.json: config.claims (figure key and its
  options) and the verdict of every row, judged now by the report's own rules."""
  spec = config.get("claims") or {}
  block = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
  if not block.get("figure"):
    return {}
  run = {
    "name": "this run",
    "results": {**results, "claims": block},
    "config": config.to_dict() if hasattr(config, "to_dict") else dict(config),
    "panels": dict(panels or {}),
  }
  block["verdicts"] = {r.id: r.verdict for r in rows(run)}
  return block
