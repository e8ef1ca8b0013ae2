"""Figures of the eigenvalue map f and of misalignment over training (the paper's Figs 2, 4, 20).

    from rl_align.plots import eigenmap as eigenmap_plots
    eigenmap_plots.plot_eigenmap(results_dict, workdir, title="Fig 20 right", reference={"sigma": [...], "f": [...]})
    eigenmap_plots.plot_panels([res_left, res_mid, res_right], ["left", "middle", "right"], refs, "fig20.png")
    eigenmap_plots.plot_misalignment({"random": snapshots, "real": snapshots}, "fig2.png")

Inputs are `rl_align.eigenmap.summarize` outputs (or results.json); seeds that diverged are not drawn.
"""

import os
from typing import Any, Mapping, Sequence

import numpy as np

from rl_align import eigenmap
from rl_align import plots


def _f_axes(ax, res: Mapping[str, Any], reference=None, title="", early_time=True):
  sigma = np.asarray(res["sigma"])
  order = np.argsort(sigma)
  f = np.asarray(res["f"], np.float64)
  ok = eigenmap.finished(res)
  for i in np.flatnonzero(ok):
    ax.plot(sigma[order], f[i][order], lw=1, alpha=0.8, label=f"seed {i}" if i < 8 else None)
  if reference:
    ax.plot(reference["sigma"], reference["f"], "k*", ms=8, label="paper (read off Fig.)")
  fits = res.get("early_time") or []
  if early_time and fits:
    fit = fits[-1]
    lam = np.asarray(res["eigenvalues"])[order]
    pred = np.sqrt(np.clip(fit["s0_sq"] + fit["c"] * lam, 0, None))
    ax.plot(sigma[order], pred, "k--", lw=1, label=f"s0²+c·λ fit (r²={fit['r2']:.2f})")
  if not ok.all():
    title = f"{title} ({int((~ok).sum())} of {len(ok)} seeds diverged, not drawn)"
  ax.set_xlabel("σ (data std along v_i)")
  ax.set_ylabel("f(σ)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)


def plot_eigenmap(
  res: Mapping[str, Any], workdir: str, title: str = "", reference=None
) -> list[str]:
  """f(σ) per seed (+ paper reference), f over snapshots, misalignment over snapshots."""
  fig = plots.figure(figsize=(15, 4))
  axes = fig.subplots(1, 3)
  _f_axes(axes[0], res, reference, title or "f at the end of training")
  snaps = res.get("snapshots") or []
  sigma = np.asarray(res["sigma"])
  order = np.argsort(sigma)
  for s in snaps:
    axes[1].plot(
      sigma[order], np.asarray(s["f_pooled"], np.float64)[order], label=f"epoch {s['epoch']:.3g}"
    )
  axes[1].set_xlabel("σ")
  axes[1].set_ylabel("f(σ), pooled over seeds")
  axes[1].set_title("f over training")
  axes[1].grid(alpha=0.3)
  if snaps:
    axes[1].legend(fontsize=7)
    _misalignment_axes(axes[2], snaps)
  return [plots.save(fig, os.path.join(workdir, "eigenmap.png"))]


def _misalignment_axes(ax, snaps):
  """Pooled-over-seeds misalignment (solid) with the per-seed range (band), both bases, and the
  finite-sample floors of a perfectly aligned Sigma_w with the pooled / per-seed sample counts."""
  steps = np.array([s["step"] for s in snaps])
  ok = eigenmap.finished(snaps[0]) if "f" in snaps[0] else None
  for basis, label, color in (
    ("eigenbasis", "data eigenbasis", "C0"),
    ("random_basis", "random basis", "C3"),
  ):
    vals = np.array([s[f"misalignment_{basis}"] for s in snaps], np.float64)  # [T, S]
    vals = vals if ok is None else vals[:, ok]
    if vals.size:
      ax.fill_between(
        steps, vals.min(1), vals.max(1), color=color, alpha=0.15, label=f"{label}, per seed (range)"
      )
    pooled = [s.get(f"misalignment_pooled_{basis}") for s in snaps]
    if None not in pooled:
      ax.plot(steps, pooled, color=color, label=f"{label}, pooled over seeds")
  ax.plot(steps, [s["misalignment_floor"]["mean"] for s in snaps], "k:", label="floor, per seed")
  if all("misalignment_pooled_floor" in s for s in snaps):
    ax.plot(
      steps, [s["misalignment_pooled_floor"]["mean"] for s in snaps], "k-.", label="floor, pooled"
    )
  ax.set_xlabel("step")
  ax.set_ylabel("misalignment")
  ax.set_yscale("symlog", linthresh=1e-2)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


def plot_panels(
  panels: Sequence[Mapping[str, Any]], titles: Sequence[str], references: Sequence[Any], path: str
) -> str:
  """One figure in the paper's layout (e.g. Fig 20's three panels), paper values marked."""
  fig = plots.figure(figsize=(5 * len(panels), 3.8))
  axes = np.atleast_1d(fig.subplots(1, len(panels)))
  for ax, res, title, ref in zip(axes, panels, titles, references):
    _f_axes(ax, res, ref, title, early_time=False)
  return plots.save(fig, path)


def plot_f_over_epochs(
  panels: Sequence[Mapping[str, Any]], titles: Sequence[str], path: str
) -> str:
  """Fig 4 centre/right: seed-pooled f(σ) at every snapshot epoch, σ on a log axis, one panel each."""
  fig = plots.figure(figsize=(5.5 * len(panels), 3.8))
  axes = fig.subplots(1, len(panels), squeeze=False)
  markers = "xDosv^<>"
  for ax, res, title in zip(axes[0], panels, titles):
    sigma = np.asarray(res["sigma"])
    order = np.argsort(sigma)
    for i, snap in enumerate(s for s in res.get("snapshots") or [] if s["epoch"] > 0):
      ax.plot(
        sigma[order],
        np.asarray(snap["f_pooled"], np.float64)[order],
        marker=markers[i % len(markers)],
        ms=4,
        lw=1,
        label=f"epoch {snap['epoch']:g}",
      )
    ax.set_xscale("log")
    ax.set_xlabel("σ (data std along v_i)")
    ax.set_ylabel("f(σ), pooled over seeds")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  return plots.save(fig, path)


def plot_misalignment(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str) -> str:
  """Fig 2: misalignment over training for several runs (e.g. random vs real labels)."""
  fig = plots.figure(figsize=(5 * len(runs), 3.8))
  axes = fig.subplots(1, len(runs), squeeze=False)
  for ax, (name, snaps) in zip(axes[0], runs.items()):
    _misalignment_axes(ax, snaps)
    ax.set_title(name)
  return plots.save(fig, path)
