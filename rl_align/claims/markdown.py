"""The claims table as markdown: the claims (in the verdict tally), then the descriptive rows and
the diagnostics (outside it), then one provenance line per run.

    from rl_align import claims
    text = claims.render(runs, rows)     # rows carry `run` (the run's name) and `plot` (a link)
"""

import shlex
from typing import Any, Mapping, Sequence

from rl_align.claims import core

# Table order: by figure, whatever order the workdirs were given in.
ORDER = (
  "Fig 1",
  "Fig 1 search",
  "Fig 2",
  "Fig 3",
  "Fig 4",
  "Fig 5",
  "Fig 5 (control)",
  "§2.5",
  "§3",
  "Fig 20",
  "Table 1",
)
HEAD = (
  "| Figure | Claim | Paper | Ours | n | Regime gate | Verdict rule | Verdict | Plot | Run |",
  "|---|---|---|---|---|---|---|---|---|---|",
)
TITLES = {
  core.CLAIMS: None,
  core.DESCRIPTIVE: "Descriptive rows (outside the tally): the paper's magnitudes",
  core.DIAGNOSTICS: "Diagnostics (outside the tally)",
}


def command(argv: Sequence[str]) -> str:
  """run.json's argv as a command to paste: `python -m experiments.X ...` for a binary's path."""
  if not argv:
    return "n/a"
  head = str(argv[0])
  parts = head.replace("\\", "/").rsplit("/", 2)
  if head.endswith(".py") and len(parts) >= 2 and parts[-2] == "experiments":
    head = f"python -m experiments.{parts[-1][:-3]}"
  else:
    head = shlex.quote(head)
  return " ".join([head] + [shlex.quote(str(a)) for a in argv[1:]])


def run_line(run: Mapping[str, Any]) -> str:
  """A run's provenance: command (run.json argv), wall time, status and machine."""
  rec = run.get("run")
  if not rec:
    return f"`{run.get('name')}`: no run.json (command, runtime and machine unknown)"
  m = rec.get("machine") or {}
  earlier = rec.get("earlier_runs") or []
  timed = [r["wall_s"] for r in earlier if r.get("wall_s") is not None]
  wall = rec.get("wall_s")
  time_text = f"{wall:.0f} s" if wall is not None else "n/a (unfinished)"
  if timed:
    time_text += f" (+ {sum(timed):.0f} s in {len(timed)} earlier invocation(s))"
  if len(timed) < len(earlier):  # killed (SIGKILL, a lost machine): no time was recorded
    time_text += f" (+ {len(earlier) - len(timed)} killed invocation(s), time not recorded)"
  gf = m.get("fp32_matmul_gflops")
  machine = (
    f"{m.get('cpu_model', '?')}, {m.get('cores', '?')} cores, {m.get('jax_backend', '?')}"
    f" ({m.get('device_kind', '?')} x{m.get('num_devices', '?')}), fp32 matmul "
    f"{f'{gf:.1f}' if gf is not None else '?'} GFLOP/s"
  )
  key = ((run.get("results") or {}).get("claims") or {}).get("figure")
  title = f" ({core.figures().get(key)})" if key in core.figures() else ""
  return (
    f"`{run.get('name')}`{title}: `{command(rec.get('argv') or [])}`; runtime {time_text}, "
    f"status {rec.get('status', '?')}; machine: {machine}"
  )


def _cell(text: Any) -> str:
  return " ".join(str(text if text is not None else "").split()).replace("|", "\\|")


def sort_rows(rows: Sequence[core.Row]) -> list[core.Row]:
  """Rows by figure (ORDER), then run name, then their order within the run."""
  rank = {f: i for i, f in enumerate(ORDER)}
  indexed = list(enumerate(rows))
  indexed.sort(key=lambda ir: (rank.get(ir[1].figure, len(ORDER)), ir[1].run, ir[0]))
  return [r for _, r in indexed]


def _table(rows: Sequence[core.Row]) -> list[str]:
  lines = list(HEAD)
  for r in rows:
    plot = f"[png]({r.plot})" if r.plot else "—"
    lines.append(
      "| "
      + " | ".join(
        _cell(c)
        for c in (
          r.figure,
          r.claim,
          r.paper,
          r.ours,
          "—" if r.n is None else r.n,
          r.gate or "—",
          r.rule,
          f"**{r.verdict}**",
          plot,
          r.run,
        )
      )
      + " |"
    )
  return lines


def render(runs: Sequence[Mapping[str, Any]], rows: Sequence[core.Row]) -> str:
  """report.md: the claims table, the descriptive and diagnostic rows, one line per run."""
  rows = sort_rows(rows)
  claims = [r for r in rows if r.section == core.CLAIMS]
  lines = [
    "# Claims of Maennel et al. 2020 tested by these runs",
    "",
    f"Intervals: two-sided {core.CONFIDENCE:.0%} Student-t over seeds (n − 1 degrees of "
    "freedom), paired where seeds pair (seed i of one arm with seed i of the other), "
    "Welch's between independent seeds, bootstrap for ratios.  A verdict rests on at least "
    f"{core.MIN_SEEDS} seeds ('underpowered' otherwise) and on runs in the regime the claim "
    f"is about: random labels fitted to ≥ {core.FIT_OVER_CHANCE:g}x chance; for negative "
    f"transfer and §3, an upstream that memorised (fit ≥ {core.MEMORISED:g}) with its later "
    f"layers alive (< {core.DEAD_MAX:.0%} dead units) before the switch ('not evaluable: "
    "regime not reached' otherwise).  Each verdict follows the rule in its row.",
    "",
  ]
  lines += _table(claims)
  counts = {v: sum(r.verdict == v for r in claims) for v in core.VERDICTS}
  lines += ["", "Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)]
  for section in (core.DESCRIPTIVE, core.DIAGNOSTICS):
    some = [r for r in rows if r.section == section]
    if some:
      lines += ["", f"## {TITLES[section]}", ""] + _table(some)
  lines += ["", "## Runs", ""]
  lines += [f"- {run_line(run)}" for run in sorted(runs, key=lambda r: str(r.get("name")))]
  return "\n".join(lines) + "\n"
