"""The host is left alone: the session compares the root namespace's links, addresses,
routes and sysctls before and after, and nothing in lab/ runs a shell."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from lab import host
from tests import subproc


@subproc.SESSIONS
def test_a_session_that_changes_the_root_namespace_fails():
    """The session runs in a network namespace of its own (`unshare --net`): that is the root
    namespace it checks and changes, so sessions running beside it see nothing, and the
    veth pair it leaves goes with the namespace when it exits."""
    r = subproc.run("-m", "pytest", "-q", "tests/failing/scenario_touches_host.py", prefix=("unshare", "--net"))
    assert "1 passed" in r.stdout, r.stdout
    assert r.returncode == 1, "the test passed, but the session must fail"
    assert "xdplab: the session changed the host (root namespace, bpffs, kernel taint):" in r.stdout
    assert re.search(r"link xlprobe0: \(absent\) -> ", r.stdout) and "link xlprobe1" in r.stdout, r.stdout
    assert subprocess.run(["ip", "link", "show", "xlprobe0"], capture_output=True).returncode != 0


@subproc.SESSIONS
def test_a_scenario_session_leaves_the_root_namespace_as_it_was():
    before = host.snapshot()
    r = subproc.run("-m", "pytest", "-q", "scenarios/test_forwarding.py", "scenarios/test_drops.py",
                    "--lab-forwarders=elf")
    assert r.returncode == 0, r.stdout
    assert "changed the host" not in r.stdout
    assert host.differences(before, host.snapshot()) == []


def test_the_library_never_runs_a_shell():
    """Commands, where lab/ runs any, are argument lists: no user string reaches a shell."""
    lab = Path(__file__).resolve().parent.parent / "lab"
    for path in lab.glob("*.py"):
        text = path.read_text()
        for forbidden in ("shell=True", "os.system(", "os.popen(", "commands.getoutput"):
            assert forbidden not in text, f"{path.name} uses {forbidden}"
