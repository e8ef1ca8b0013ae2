"""The README's python blocks run as written, in a fresh interpreter (a user pastes them)."""

import re

import pytest

from tests import helpers


def _blocks() -> list[str]:
  with open(f"{helpers.ROOT}/README.md", encoding="utf-8") as f:
    return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_the_readme_has_python_blocks():
  assert _blocks()


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(_blocks())))
def test_readme_python_block_runs_verbatim(i, tmp_path):
  script = tmp_path / "block.py"
  script.write_text(_blocks()[i])
  proc = helpers.run_python(str(script), timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
