"""Fig 3's figure: the top eigenvectors of the patch covariance above those of the filters.

from rl_align.plots import filters as filter_plots
filter_plots.plot_eigenvectors(v_x, v_w, (5, 5, 3), "/tmp/fig3.png", matches=best_matches)
"""

from rl_align import plots


def plot_eigenvectors(v_x, v_w, shape, path: str, n: int = 10, matches=None) -> str:
  """Top-n eigenvectors of the patch covariance (top row) and filter covariance (bottom row);
  `matches` (`filters.best_matches` output) labels each filter eigenvector with its closest PC."""
  n = min(n, v_x.shape[1])
  fig = plots.figure(figsize=(1.3 * n, 3))
  axes = fig.subplots(2, n, squeeze=False)
  for row, (v, label) in enumerate(((v_x, "data patches"), (v_w, "filters"))):
    for i in range(n):
      img = v[:, i].reshape(shape)
      img = (img - img.min()) / max(img.max() - img.min(), 1e-12)
      ax = axes[row, i]
      ax.imshow(img if shape[-1] == 3 else img[..., 0], cmap=None if shape[-1] == 3 else "gray")
      ax.set_xticks([]), ax.set_yticks([])
      if i == 0:
        ax.set_ylabel(label, fontsize=8)
      if row == 0:
        ax.set_title(f"#{i + 1}", fontsize=8)
      elif matches is not None:
        ax.set_xlabel(
          f"≈ PC #{matches['best_match_pc'][i]} (|cos| {matches['best_match_cos'][i]:.2f})",
          fontsize=7,
        )
  return plots.save(fig, path)
