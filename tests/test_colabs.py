"""Executes the colabs at tiny size (RL_ALIGN_TINY=1) with nbclient and checks what they print."""
import os

import nbclient
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name,expected", [
    ("eigenmap.ipynb", ("f at smallest sigma", "misalignment eigenbasis")),
])
def test_notebook_runs_at_tiny_size(monkeypatch, name, expected):
  monkeypatch.setenv("RL_ALIGN_TINY", "1")
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  nb = nbformat.read(os.path.join(ROOT, "colabs", name), as_version=4)
  nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": ROOT}}).execute()
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
  for e in expected:
    assert e in text, (e, text[-2000:])
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert images
