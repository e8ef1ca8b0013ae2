"""Executes colabs/fig5_covariance_init.ipynb at tiny size (RL_ALIGN_TINY=1) with nbclient."""
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fig5_notebook_runs_at_tiny_size(monkeypatch):
  monkeypatch.setenv("RL_ALIGN_TINY", "1")
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  nb = nbformat.read(os.path.join(ROOT, "colabs", "fig5_covariance_init.ipynb"), as_version=4)
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": ROOT}})
  client.execute()
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
  assert "covariance" in text and "upstream random-label train accuracy" in text
  assert "relative error of the sample covariance" in text
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert images      # at tiny size only the transfer figure is displayed
