"""Every ```python block in the README runs as written (each in a fresh interpreter,
in a temp directory), so the API tour cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _blocks() -> list[tuple[int, str]]:
    text = open(README, encoding="utf-8").read()
    out = []
    for m in re.finditer(r"```python\n(.*?)```", text, re.S):
        line = text.count("\n", 0, m.start()) + 1
        out.append((line, m.group(1)))
    return out


@pytest.mark.parametrize("line,code", _blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_example_runs(tmp_path, line, code):
    env = dict(os.environ)
    env.pop("SLUICEGATE_STORE", None)
    if env.get("PYTHONPATH"):  # keep a source-tree run working from the temp directory
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, f"README block at line {line} failed:\n{r.stderr[-3000:]}"


def test_readme_has_the_two_setup_commands():
    text = open(README, encoding="utf-8").read()
    assert "sluicegate demo" in text
    assert "python -m pytest" in text
