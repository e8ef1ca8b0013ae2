"""Moved to `rl_align.plots.eigenmap`; this name stays for old imports.

    from rl_align import plotting
    plotting.plot_misalignment({"random": snapshots}, "/tmp/fig2.png")
"""
from rl_align.plots.eigenmap import plot_eigenmap  # pylint: disable=unused-import
from rl_align.plots.eigenmap import plot_f_over_epochs  # pylint: disable=unused-import
from rl_align.plots.eigenmap import plot_misalignment  # pylint: disable=unused-import
from rl_align.plots.eigenmap import plot_panels  # pylint: disable=unused-import
