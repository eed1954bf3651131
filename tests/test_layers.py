"""The two layers: tests/unit/ passes as an unprivileged user (nobody), with no kernel object
made; the root tests, run as nobody, are skipped with the reason instead of failing."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from lab.environment import NEEDS_ROOT
from tests import subproc

pytestmark = pytest.mark.skipif(shutil.which("runuser") is None, reason="no runuser (util-linux) to become nobody")


def as_nobody(*args: str) -> subprocess.CompletedProcess:
    """pytest as user nobody in this checkout. CI clones into a private folder (mktemp -d:
    mode 700), which nobody may not list or enter: for the run, the checkout and its parents
    get o+rx where they lack it (files inside are world-readable, as git made them), then
    their modes are put back."""
    opened = []
    for d in [subproc.ROOT, *subproc.ROOT.parents]:
        mode = d.stat().st_mode & 0o7777
        if mode & 0o005 != 0o005:
            d.chmod(mode | 0o005)
            opened.append((d, mode))
    try:
        return subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-m", "pytest", "-p",
                               "no:cacheprovider", *args], cwd=subproc.ROOT, capture_output=True, text=True,
                              timeout=300, env=subproc.child_env(PYTHONDONTWRITEBYTECODE="1", HOME="/tmp"))
    finally:
        for d, mode in opened:
            d.chmod(mode)


def test_the_unit_layer_passes_as_nobody():
    r = as_nobody("-q", "-n0", "tests/unit")
    summary = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0 and re.fullmatch(r"\d+ passed in [\d.]+s", summary), r.stdout[-3000:] + r.stderr


def test_root_tests_as_nobody_are_skipped_with_the_reason():
    r = as_nobody("-q", "-rs", "tests/test_lab.py::test_attach_is_read_back_and_detach_removes_it",
                  "scenarios/test_drops.py::test_the_mtu_limit_the_fix_names_is_the_kernels")
    assert r.returncode == 0 and "passed" not in r.stdout and "failed" not in r.stdout, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("3 skipped"), r.stdout      # skb, drv, and the MTU check
    skips = [line for line in r.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skips and all(line.endswith(NEEDS_ROOT) for line in skips), r.stdout
