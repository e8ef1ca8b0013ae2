"""Executes colabs/specialization.ipynb at tiny size (RL_ALIGN_TINY=1) with nbclient."""
import os
import tempfile

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_specialization_notebook_runs_at_tiny_size(monkeypatch, tmp_path):
  monkeypatch.setenv("RL_ALIGN_TINY", "1")
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  # Same programs as tests/test_specialization.py's binary runs: reuse their compilation cache.
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR",
                     os.path.join(tempfile.gettempdir(), f"rl_align_jax_cache_{os.getuid()}"))
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  nb = nbformat.read(os.path.join(ROOT, "colabs", "specialization.ipynb"), as_version=4)
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": ROOT}})
  client.execute()
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
  assert "gain" in text and "narrow" in text
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) >= 3      # activity figure, firing-rate histograms, gain figure
