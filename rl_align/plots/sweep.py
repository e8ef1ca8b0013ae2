"""A sweep's figure: every headline scalar (seed mean ± seed std) against one swept field.

    from rl_align.plots import sweep as sweep_plots
    sweep_plots.plot_field(rows, "train.learning_rate", "/tmp/sweep_lr.png")   # rows of sweep.json

Points that differ in other swept fields are drawn as separate lines, labelled by those fields.
"""

import math
from typing import Any, Mapping, Sequence

from rl_align import plots

MAX_PANELS = 12


def _num(v: Any) -> float | None:
  return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def plot_field(rows: Sequence[Mapping[str, Any]], field: str, path: str) -> str:
  names = sorted({k for r in rows for k in r["summary"]})[:MAX_PANELS]
  cols = min(4, max(1, len(names)))
  nrows = max(1, math.ceil(len(names) / cols))
  fig = plots.figure(figsize=(3.4 * cols, 2.6 * nrows), layout="constrained")
  axes = fig.subplots(nrows, cols, squeeze=False).ravel()
  numeric = all(_num(r["fields"][field]) is not None for r in rows)
  # Non-numeric values (strings, tuples; JSON gives lists) are placed by their repr.
  xs_all = sorted({repr(r["fields"][field]) for r in rows}) if not numeric else None
  lines: dict[str, list[Mapping[str, Any]]] = {}
  for r in rows:
    rest = ", ".join(f"{k}={v}" for k, v in r["fields"].items() if k != field)
    lines.setdefault(rest, []).append(r)
  for ax, name in zip(axes, names):
    for label, rs in lines.items():
      rs = sorted(rs, key=lambda r: r["fields"][field] if numeric else repr(r["fields"][field]))
      pts = [(r["fields"][field], r["summary"].get(name)) for r in rs if r["summary"].get(name)]
      if not pts:
        continue
      x = [p[0] if numeric else xs_all.index(repr(p[0])) for p in pts]
      y = [p[1]["mean"] for p in pts]
      err = [p[1]["std"] or 0.0 for p in pts]
      ax.errorbar(x, y, yerr=err, marker="o", ms=3, capsize=2, label=label or None)
    ax.set_title(name, fontsize=8)
    ax.set_xlabel(field, fontsize=8)
    if numeric and all(r["fields"][field] > 0 for r in rows):
      vals = [r["fields"][field] for r in rows]
      if max(vals) / min(vals) >= 20:
        ax.set_xscale("log")
    if not numeric:
      ax.set_xticks(range(len(xs_all)), xs_all, fontsize=7)
    ax.tick_params(labelsize=7)
  for ax in axes[len(names) :]:
    ax.set_visible(False)
  if len(lines) > 1 and names:
    axes[0].legend(fontsize=6)
  fig.suptitle(f"sweep over {field} (seed mean ± std)", fontsize=9)
  return plots.save(fig, path)
