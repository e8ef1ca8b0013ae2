"""Executes every colab at tiny size (RL_ALIGN_TINY=1) with nbclient and checks what it prints."""

import os

import nbclient
import nbformat
import pytest

from tests.helpers import ROOT


@pytest.mark.parametrize(
  "name,expected,min_images",
  [
    ("eigenmap.ipynb", ("f at smallest sigma", "misalignment eigenbasis"), 1),
    (
      "fig5_covariance_init.ipynb",
      (
        "covariance",
        "upstream random-label train accuracy",
        "relative error of the sample covariance",
      ),
      1,
    ),
    ("specialization.ipynb", ("gain", "narrow"), 3),  # activity, firing-rate histograms, gain
  ],
)
@pytest.mark.slow
def test_notebook_runs_at_tiny_size(monkeypatch, name, expected, min_images):
  monkeypatch.setenv("RL_ALIGN_TINY", "1")
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  nb = nbformat.read(os.path.join(ROOT, "colabs", name), as_version=4)
  nbclient.NotebookClient(
    nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}}
  ).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  text = "".join(o.get("text", "") for o in outputs)
  for e in expected:
    assert e in text, (e, text[-2000:])
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= min_images
