"""Figures of the experiments, with one convention.

Every plot function draws on its own `matplotlib.figure.Figure` (never pyplot, no global backend
switch, nothing to close), writes it to `path` and returns the path::

    from rl_align.plots import eigenmap as eigenmap_plots
    eigenmap_plots.plot_panels([res], ["right"], [None], "/tmp/f.png")

Modules: `eigenmap` (Figs 2, 4, 20), `filters` (Fig 3), `transfer` (Figs 1, 5), `specialization`
(section 3).  They read results dicts (as written to results.json) and import no runner.
"""

import io
import os

from matplotlib.figure import Figure

from rl_align import results


def figure(**kw) -> Figure:
  """A Figure not registered with pyplot (Figure(figsize=..., layout=...))."""
  return Figure(**kw)


def png_bytes(fig: Figure, tight: bool = True) -> bytes:
  """fig rendered as PNG bytes at its own dpi, laid out tight first unless `tight` is False (the
  layout costs about half of a small figure's rendering time)."""
  buf = io.BytesIO()
  if tight:
    fig.tight_layout()
  fig.savefig(buf, format="png", dpi=fig.dpi)
  return buf.getvalue()


def save(fig: Figure, path: str, dpi: int = 110) -> str:
  """Lays fig out (tight, unless it has a layout engine), writes it to path (creating its folder);
  returns path."""
  if not results.writes_here():  # process 0 alone draws (multi-process runs)
    return path
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if fig.get_layout_engine() is None:
    fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  return path
