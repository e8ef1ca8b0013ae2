"""Figures of the specialization sweep (the paper's section 3): activity across the switch, gains.

    from rl_align.plots import specialization as spec_plots
    spec_plots.plot_all(out, workdir, config)   # specialization_activity.png, specialization_gain.png

`out` is the sweep's results dict (`rl_align.runners.specialization.run`); points whose seeds all
diverged show as 'div' and are not drawn in the activity figure.
"""

import os
from typing import Any, Mapping, Sequence

import numpy as np

from rl_align import plots
from rl_align import specialization as lib


def plot_activity(
  out: Mapping[str, Any], ids: Sequence[str], path: str, titles: Sequence[str] | None = None
) -> str:
  """Rows = points; columns = ReLU layers (active / dead fraction over steps relative to the
  switch, symlog x) and the downstream train accuracy of the arm vs scratch."""
  layers = out["layers"]
  fig = plots.figure(figsize=(3.2 * (len(layers) + 1), 2.7 * len(ids)))
  axes = fig.subplots(len(ids), len(layers) + 1, squeeze=False)
  for r, pid in enumerate(ids):
    p = out["points"][pid]
    sw = p["switch_step"]
    for c, layer in enumerate(layers):
      ax, a = axes[r, c], p["activity"][layer]
      x = np.asarray(a["steps"]) - sw
      for stat, style, label in (
        ("active_fraction", "-", "active"),
        ("dead_fraction", "--", "dead"),
      ):
        m, sd = np.asarray(a[stat]), np.asarray(a[stat + "_std"])
        ax.plot(x, m, style, color="C0", label=f"{label} (pretrained)")
        ax.fill_between(x, m - sd, m + sd, color="C0", alpha=0.15)
      sa = p["scratch_activity"][layer]
      ax.plot(
        np.asarray(sa["steps"]),
        sa["active_fraction"],
        "-",
        color="0.5",
        lw=1,
        label="active (scratch)",
      )
      ax.axvline(0, color="C3", lw=1, label="switch")
      ax.set_xscale("symlog", linthresh=max(1.0, 2 * float(np.diff(sa["steps"][:2])[0])))
      ax.set_ylim(0, 1)
      ax.grid(alpha=0.3)
      d = p["activity_drop"][layer]
      ax.set_title(
        f"{layer}: {d['before']:.2f}->{d['after']:.2f} "
        f"(scratch {d['scratch_before']:.2f}->{d['scratch_before'] - d['scratch_drop']:.2f})",
        fontsize=8,
      )
      if r == len(ids) - 1:
        ax.set_xlabel("step - switch (symlog)", fontsize=8)
      if c == 0:
        name = titles[r] if titles else pid
        ax.set_ylabel(f"{name}\nfraction of ReLUs", fontsize=8)
    ax = axes[r, -1]
    steps = np.asarray(p["downstream_steps"])
    ax.plot(steps, p["accuracy"], color="C0", label=p["arm"])
    ax.fill_between(
      steps,
      np.asarray(p["accuracy"]) - np.asarray(p["accuracy_std"]),
      np.asarray(p["accuracy"]) + np.asarray(p["accuracy_std"]),
      color="C0",
      alpha=0.15,
    )
    ax.plot(steps, p["accuracy_scratch"], color="0.5", label="scratch")
    ax.axhline(p["threshold"], color="k", lw=0.8, ls=":")
    ax.set_title(f"downstream train acc, gain {lib.gain_text(p)}", fontsize=8)
    ax.set_xlabel("downstream step", fontsize=8)
    ax.grid(alpha=0.3)
    if r == 0:
      ax.legend(fontsize=7)
  axes[0, 0].legend(fontsize=6, loc="lower left")
  return plots.save(fig, path, dpi=80)


def _heat(ax, grid, xs, ys, texts, xlabel, ylabel, title):
  logg = np.log2(np.clip(np.asarray(grid, np.float64), 1 / 8, 8))
  im = ax.imshow(logg, cmap="RdBu", vmin=-1.5, vmax=1.5, origin="lower", aspect="auto")
  for i in range(len(ys)):
    for j in range(len(xs)):
      dark = np.isfinite(logg[i, j]) and abs(logg[i, j]) > 0.9
      ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=7, color="w" if dark else "k")
  ax.set_xticks(range(len(xs)), [str(x) for x in xs], fontsize=7)
  ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys], fontsize=7)
  ax.set_xlabel(xlabel, fontsize=8)
  ax.set_ylabel(ylabel, fontsize=8)
  ax.set_title(title, fontsize=8)
  return im


def plot_gain(out: Mapping[str, Any], config, path: str) -> str:
  """Gain heatmaps: width x learning rate (main K, L), width x K (main lr, L), and gain vs the
  upstream length per width (main lr and the largest lr, main K); red = pretrained slower."""
  sw = config.sweep
  main = dict(config.highlight.negative) if config.get("highlight") else {}
  arm = main.get("arm", "pretrained")
  k0 = main.get("num_random_classes", sw.num_random_classes[-1])
  l0 = main.get("upstream_steps", max(sw.upstream_steps))
  lr0 = main.get("learning_rate", sw.learning_rates[-1])
  pts = out["points"]

  def cell(w, lr, k, l):
    pid = lib.point_id(w, float(lr), k, l, arm)
    p = pts.get(pid)
    if p is None:
      return np.nan, ""
    if p.get("error") or p["censored"] == "both":
      return np.nan, lib.gain_text(p)
    return p["gain_censored"], lib.gain_text(p)

  ws = list(sw.widths)
  crit_lrs = sorted({float(lr0), float(max(sw.learning_rates))})
  fig = plots.figure(figsize=(4.6 * (2 + len(crit_lrs)), 3.8), layout="constrained")
  axes = fig.subplots(1, 2 + len(crit_lrs))
  pairs = [[cell(w, lr, k0, l0) for w in ws] for lr in sw.learning_rates]
  im = _heat(
    axes[0],
    [[v for v, _ in r] for r in pairs],
    ws,
    list(sw.learning_rates),
    [[t for _, t in r] for r in pairs],
    "width of later layers",
    "learning rate",
    f"gain ({arm}), K={k0}, L={l0}",
  )
  pairs = [[cell(w, lr0, k, l0) for w in ws] for k in sw.num_random_classes]
  _heat(
    axes[1],
    [[v for v, _ in r] for r in pairs],
    ws,
    list(sw.num_random_classes),
    [[t for _, t in r] for r in pairs],
    "width of later layers",
    "random classes K",
    f"gain ({arm}), lr={lr0:g}, L={l0}",
  )
  ls = sorted(int(l) for l in sw.upstream_steps)
  for ax, lr in zip(axes[2:], crit_lrs):
    for j, w in enumerate(ws):
      vals = np.array([cell(w, lr, k0, l)[0] for l in ls], np.float64)
      ax.plot(ls, vals, "o-", color=f"C{j}", label=f"width {w}")
      cens = [
        pts.get(lib.point_id(w, float(lr), k0, l, arm), {}).get("censored", "none") != "none"
        for l in ls
      ]
      if any(cens):  # a censored gain is a bound: hollow marker
        ax.plot(np.array(ls)[cens], vals[cens], "o", mfc="w", color=f"C{j}")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xticks(ls, [str(l) for l in ls])
    ax.minorticks_off()
    ax.set_yscale("log", base=2)
    ax.set_xlabel("upstream steps L (snapshots of one run)", fontsize=8)
    ax.set_ylabel("gain (scratch its / pretrained its)", fontsize=8)
    ax.set_title(f"critical stage: lr={lr:g}, K={k0} (hollow: censored bound)", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  cb = fig.colorbar(im, ax=axes[1], shrink=0.9, pad=0.02)
  cb.set_label("log2 gain (blue: faster than scratch)", fontsize=8)
  return plots.save(fig, path, dpi=80)


def plot_all(out: Mapping[str, Any], workdir: str, config) -> list[str]:
  """specialization_activity.png (highlighted points, else the first) and specialization_gain.png."""
  h = out.get("highlight") or {}
  pts = out["points"]
  named = [(k, h[k]) for k in ("negative", "wide") if h.get(k) and not pts[h[k]].get("error")]
  ids = [i for _, i in named] or [next((i for i, p in pts.items() if not p.get("error")), None)]
  titles = [f"{k}: w={pts[i]['width']}" for k, i in named] or None
  paths = (
    []
    if ids == [None]
    else [plot_activity(out, ids, os.path.join(workdir, "specialization_activity.png"), titles)]
  )
  return paths + [plot_gain(out, config, os.path.join(workdir, "specialization_gain.png"))]
