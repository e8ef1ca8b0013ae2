"""Plots written next to the numbers (matplotlib, Agg backend; files only, no windows).

Usage::

    from rl_align import plotting
    plotting.plot_eigenmap(results_dict, workdir, title="Fig 20 right", reference={"sigma": [...], "f": [...]})
    plotting.plot_panels([res_left, res_mid, res_right], ["left", "middle", "right"], refs, "fig20.png")
"""
import os
from typing import Any, Mapping, Sequence

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np


def _f_axes(ax, res: Mapping[str, Any], reference=None, title="", early_time=True):
  sigma = np.asarray(res["sigma"])
  order = np.argsort(sigma)
  f = np.asarray(res["f"])
  for i, fs in enumerate(f):
    ax.plot(sigma[order], fs[order], lw=1, alpha=0.8, label=f"seed {i}" if i < 8 else None)
  if reference:
    ax.plot(reference["sigma"], reference["f"], "k*", ms=8, label="paper (read off Fig.)")
  fits = res.get("early_time") or []
  if early_time and fits:
    fit = fits[-1]
    lam = np.asarray(res["eigenvalues"])[order]
    pred = np.sqrt(np.clip(fit["s0_sq"] + fit["c"] * lam, 0, None))
    ax.plot(sigma[order], pred, "k--", lw=1, label=f"s0²+c·λ fit (r²={fit['r2']:.2f})")
  ax.set_xlabel("σ (data std along v_i)")
  ax.set_ylabel("f(σ)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


def plot_eigenmap(res: Mapping[str, Any], workdir: str, title: str = "", reference=None) -> list[str]:
  """f(σ) per seed (+ paper reference), f over snapshots, misalignment over snapshots."""
  paths = []
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  _f_axes(axes[0], res, reference, title or "f at the end of training")
  snaps = res.get("snapshots") or []
  sigma = np.asarray(res["sigma"])
  order = np.argsort(sigma)
  for s in snaps:
    axes[1].plot(sigma[order], np.asarray(s["f_pooled"])[order], label=f"epoch {s['epoch']:.3g}")
  axes[1].set_xlabel("σ")
  axes[1].set_ylabel("f(σ), pooled over seeds")
  axes[1].set_title("f over training")
  axes[1].grid(alpha=0.3)
  if snaps:
    axes[1].legend(fontsize=7)
    _misalignment_axes(axes[2], snaps)
  fig.tight_layout()
  paths.append(os.path.join(workdir, "eigenmap.png"))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)
  return paths


def _misalignment_axes(ax, snaps):
  """Pooled-over-seeds misalignment (solid) with the per-seed range (band), both bases, and the
  finite-sample floors of a perfectly aligned Sigma_w with the pooled / per-seed sample counts."""
  steps = np.array([s["step"] for s in snaps])
  for basis, label, color in (("eigenbasis", "data eigenbasis", "C0"),
                              ("random_basis", "random basis", "C3")):
    vals = np.array([s[f"misalignment_{basis}"] for s in snaps])  # [T, S]
    ax.fill_between(steps, vals.min(1), vals.max(1), color=color, alpha=0.15,
                    label=f"{label}, per seed (range)")
    pooled = [s.get(f"misalignment_pooled_{basis}") for s in snaps]
    if None not in pooled:
      ax.plot(steps, pooled, color=color, label=f"{label}, pooled over seeds")
  ax.plot(steps, [s["misalignment_floor"]["mean"] for s in snaps], "k:", label="floor, per seed")
  if all("misalignment_pooled_floor" in s for s in snaps):
    ax.plot(steps, [s["misalignment_pooled_floor"]["mean"] for s in snaps], "k-.",
            label="floor, pooled")
  ax.set_xlabel("step")
  ax.set_ylabel("misalignment")
  ax.set_yscale("symlog", linthresh=1e-2)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


def plot_panels(panels: Sequence[Mapping[str, Any]], titles: Sequence[str],
                references: Sequence[Any], path: str) -> str:
  """One figure in the paper's layout (e.g. Fig 20's three panels), paper values marked."""
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
  axes = np.atleast_1d(axes)
  for ax, res, title, ref in zip(axes, panels, titles, references):
    _f_axes(ax, res, ref, title, early_time=False)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_f_over_epochs(panels: Sequence[Mapping[str, Any]], titles: Sequence[str], path: str) -> str:
  """Fig 4 centre/right: seed-pooled f(σ) at every snapshot epoch, σ on a log axis, one panel each."""
  fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
  markers = "xDosv^<>"
  for ax, res, title in zip(axes[0], panels, titles):
    sigma = np.asarray(res["sigma"])
    order = np.argsort(sigma)
    for i, snap in enumerate(s for s in res.get("snapshots") or [] if s["epoch"] > 0):
      ax.plot(sigma[order], np.asarray(snap["f_pooled"])[order], marker=markers[i % len(markers)],
              ms=4, lw=1, label=f"epoch {snap['epoch']:g}")
    ax.set_xscale("log")
    ax.set_xlabel("σ (data std along v_i)")
    ax.set_ylabel("f(σ), pooled over seeds")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_misalignment(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str) -> str:
  """Fig 2: misalignment over training for several runs (e.g. random vs real labels)."""
  fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.8), squeeze=False)
  for ax, (name, snaps) in zip(axes[0], runs.items()):
    _misalignment_axes(ax, snaps)
    ax.set_title(name)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
