"""The transfer figure (Figs 1 and 5): downstream accuracy of every arm with seed bands.

    from rl_align.plots import transfer as transfer_plots
    transfer_plots.plot_transfer(results_dict, "/tmp/fig5/fig5.png", title="Fig 5 (local)")

Left: downstream train accuracy over iterations, seed mean with a +-1 std band per arm (paper
values, if given as reference {"iterations": [...], arm: [...]}, as markers).  Right: final test
accuracy per arm (every seed a dot, mean +- std as an error bar).  Upstream random-label train
accuracy goes in the title.  Seeds that diverged are left out; colours and labels come from the
arm registry (`rl_align.transfer.style`), so an arm looks the same in every figure.
"""

from typing import Any, Mapping

import numpy as np

from rl_align import curves
from rl_align import plots
from rl_align import transfer


def plot_transfer(
  res: Mapping[str, Any], path: str, title: str = "", reference: Mapping[str, Any] | None = None
) -> str:
  """Writes the two-panel figure to `path`; returns path."""
  arms = res["arms"]
  fig = plots.figure(figsize=(12, 4.2))
  ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
  firsts = []
  for i, (arm, r) in enumerate(arms.items()):
    color, ls, label = transfer.style(arm, i)
    steps = np.asarray(r["iterations"], np.float64)
    acc = transfer.finished_accuracy(r)
    test = np.asarray(r["test_accuracy"], np.float64)[transfer.finished(r)]
    if not len(acc):
      continue
    m, s = acc.mean(0), acc.std(0)
    if len(steps) > 1:
      firsts.append(m[1])
    ax.plot(steps, m, color=color, ls=ls, lw=1.6, label=f"{label} (n={len(acc)})")
    ax.fill_between(steps, m - s, m + s, color=color, alpha=0.18, lw=0)
    bx.errorbar([i], [test.mean()], yerr=[test.std()], color=color, fmt="o", capsize=4, ms=7)
    bx.plot(
      np.full(len(test), i) + np.linspace(-0.15, 0.15, len(test)),
      test,
      ".",
      color=color,
      alpha=0.5,
      ms=4,
    )
  if reference:
    its = reference["iterations"]
    for i, (arm, vals) in enumerate((k, v) for k, v in reference.items() if k != "iterations"):
      ax.plot(its, vals, "*", color=transfer.style(arm, i)[0], ms=9, mec="k", mew=0.5)
    ax.plot([], [], "*", color="w", mec="k", label="paper (read off Fig. 5)")
  # Like the paper, start the y axis near the first evaluation: step 0 (chance) would squash the
  # part of the curves where the arms differ.
  if firsts:
    ax.set_ylim(max(0.0, min(firsts) - 0.05), 1.0)
  ax.set_xlabel("downstream training iterations")
  ax.set_ylabel("downstream train accuracy")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  up = res.get("upstream")
  sub = ""
  if up:
    ua = np.asarray(up["train_accuracy"], np.float64)
    ua = ua[curves.finished_seeds(up.get("diverged"), len(ua))]
    if len(ua):
      sub = f"upstream random-label train acc {ua.mean():.2f}±{ua.std():.2f}"
  ax.set_title(f"{title}\n{sub}" if title else sub, fontsize=10)
  bx.set_xticks(range(len(arms)))
  bx.set_xticklabels(
    [transfer.style(a, i)[2] for i, a in enumerate(arms)], rotation=40, ha="right", fontsize=8
  )
  bx.set_ylabel("test accuracy at the end")
  bx.grid(alpha=0.3, axis="y")
  return plots.save(fig, path, dpi=90)
