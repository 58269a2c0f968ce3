"""The README's Python blocks, run in order so that they cannot rot.

Every ```python block of README.md runs in one namespace, in an empty working directory, and
must not raise. A ```python no-run block needs a running server: it is compiled, not run.
"""

import os
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```python( no-run)?\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def test_readme_python_blocks_run(tmp_path):
    blocks = FENCE.findall(README.read_text())
    assert len(blocks) >= 2, "README.md has no Python section"
    namespace: dict = {"__name__": "readme"}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        ran = 0
        for i, (no_run, code) in enumerate(blocks):
            compiled = compile(code, f"README.md python block {i + 1}", "exec")
            if not no_run:
                exec(compiled, namespace)
                ran += 1
    finally:
        os.chdir(cwd)
    assert ran >= 1
    assert (tmp_path / "store" / "views" / "CURRENT").exists()
