"""make check (run by make test before pytest): mypy --strict on lab/ and ruff on all the
Python. Proved on a copy of the checkout with one mistake each: both fail, naming it."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_checks_fail_on_a_wrong_type_and_a_long_line(tmp_path):
    """(That they pass on the checkout itself is make check's own run, before pytest.)"""
    copy = tmp_path / "checkout"
    copy.mkdir()
    shutil.copytree(ROOT / "lab", copy / "lab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy)
    if (ROOT / ".mypy_cache").is_dir():         # make check's cache: mypy re-checks only what changed
        shutil.copytree(ROOT / ".mypy_cache", tmp_path / "cache")
    mypy = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")]
    ruff = [sys.executable, "-m", "ruff", "check", "--no-cache", "lab"]
    names = copy / "lab" / "names.py"
    names.write_text(names.read_text() + '\n\ndef broken() -> int:\n    return "' + "x" * 120 + '"\n')
    typed = subprocess.run(mypy, cwd=copy, capture_output=True, text=True)
    linted = subprocess.run(ruff, cwd=copy, capture_output=True, text=True)
    assert typed.returncode == 1 and 'lab/names.py:' in typed.stdout and "Incompatible return value type" in \
        typed.stdout, typed.stdout
    assert linted.returncode == 1 and "E501" in linted.stdout and "lab/names.py" in linted.stdout, linted.stdout
