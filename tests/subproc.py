"""Running the lab in a child process, as a user would: its own run id, no xdist worker
identity inherited from the test that starts it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Tests that start whole pytest sessions or commands (whose sweeps remove dead labs'
# leftovers) each run in a sandbox of their own (tests/conftest.py, lab.netns.sandbox), side
# by side: one's sweep never sees another's kill.
SESSIONS = pytest.mark.usefixtures("own_sandbox")


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XDPLAB_RUN", "PYTEST_XDIST_WORKER")}
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
        prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`python <args>` in the repository, output captured."""
    return subprocess.run([*prefix, sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env or child_env())


def popen(*args: str, env: dict[str, str]) -> subprocess.Popen:
    """`python <args>` in the repository, running on (the caller signals or kills it). Its
    SIGINT is set to the default first: a shell that starts a job in the background without
    job control (`cmd &` in a script, some CI runners) ignores SIGINT in it, every process it
    starts inherits that, and a Python started so never raises KeyboardInterrupt."""
    return subprocess.Popen(["env", "--default-signal=INT", sys.executable, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def lab_command(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m lab <args>` as a user types it, in the repository."""
    return run("-m", "lab", *args, timeout=timeout, env=env)


def run_cli(*argv: str) -> tuple[int, str]:
    """`python -m lab <argv>` in this process (fast enough to fuzz): exit code and stderr."""
    import contextlib
    import io

    from lab import cli
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = cli.main(list(argv))
        except SystemExit as e:
            rc = int(e.code or 0)
    return rc, err.getvalue()


# how many examples the fuzz tests draw (scripts/soak.sh fuzz: thousands)
FUZZ_EXAMPLES = int(os.environ.get("XDPLAB_INPUT_FUZZ_EXAMPLES", "30"))
GOOD_VETH = '[[veth]]\na = { ns = "a", name = "v0" }\nb = { ns = "b", name = "v1" }\n'   # a lab file's one pair
