"""The style and type checks `make lint` runs (on the tree, before the tests): each catches what it is for.

Each check runs with the project's own settings (pyproject.toml) on a small file that breaks exactly
one rule, so settings that silently check nothing (a rule set left out, a checker not finding its config) fail here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

CONFIG = ROOT / "pyproject.toml"
BIN = Path(sys.executable).parent


def _run(tool: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    exe = BIN / tool
    if not exe.exists():
        pytest.skip(f"{tool} is not installed: `make setup-python` installs the Pipfile's dev packages")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "tool, source, expected",
    [
        ("ruff-format", "x = {  'a':1 }\n", "1 file would be reformatted"),
        ("ruff-check", "import os\n", "F401"),
        ("ruff-check", f"x = '{'y' * 130}'\n", "E501"),
        ("ruff-check", "def f(a, b):\n    return list(zip(a, b))\n", "B905"),
        ("mypy", "def f(x: int) -> str:\n    return x\n", 'Incompatible return value type (got "int", expected "str")'),
        (
            "mypy",
            "from typing import Optional\n\ndef f(x: Optional[str]) -> int:\n    return len(x)\n",
            'incompatible type "str | None"',
        ),
    ],
    ids=["unformatted", "unused-import", "long-line", "zip-without-strict", "wrong-return", "optional-unchecked"],
)
def test_each_check_fails_a_file_that_breaks_its_rule(tmp_path, tool, source, expected):
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    if tool == "ruff-format":
        done = _run("ruff", "format", "--check", "--config", str(CONFIG), str(bad), cwd=tmp_path)
    elif tool == "ruff-check":
        done = _run("ruff", "check", "--config", str(CONFIG), str(bad), cwd=tmp_path)
    else:
        done = _run(
            "mypy", "--config-file", str(CONFIG), "--cache-dir", str(tmp_path / "cache"), str(bad), cwd=tmp_path
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert expected in done.stdout + done.stderr
