"""Teardown always happens: after a failure, an exception in a fixture, Ctrl-C (with and
without -n), a pytest-timeout expiry. A SIGKILLed process leaves its namespaces; the next
session and `python -m lab clean` remove them, and only them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import netns, sweep
from tests import subproc

pytestmark = subproc.SESSIONS
HANGS = "tests/failing/scenario_hangs.py"


def ours(run: str) -> list[str]:
    return [n for n in netns.list_names() if n.startswith(f"xdplab-{run}-")]


def labs_and_parking(run: str) -> tuple[list[str], list[str]]:
    """The run's lab namespaces, and its processes' XDP parking namespaces (lab.xdp.Parking)."""
    names = ours(run)
    parking = sorted(n for n in names if n.endswith("-xdp-parking"))
    return sorted(n for n in names if n not in parking), parking


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def interrupt_leftover_sessions(own_sandbox: str) -> Iterator[None]:
    """A session a test started and that still runs when the test ends (an assertion failed
    before its signal) is interrupted, so that it tears its lab down, then killed; before
    own_sandbox checks that nothing was left."""
    yield
    while _started:
        p = _started.pop()
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()


def start(run: str, ready: Path, *args: str) -> subprocess.Popen:
    p = _start(run, ready, *args)
    _started.append(p)
    return p


def _start(run: str, ready: Path, *args: str) -> subprocess.Popen:
    return subproc.popen("-m", "pytest", "-q", HANGS, "--lab-forwarders=elf", *args,
                         env=subproc.child_env(XDPLAB_RUN=run,
                                                                                 XDPLAB_READY=str(ready)))


def wait_ready(p: subprocess.Popen, ready: Path, count: int = 3) -> list[str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ready.exists() and len(ready.read_text().split()) >= count:
            return ready.read_text().split()
        assert p.poll() is None, p.stdout.read()
        time.sleep(0.05)
    p.kill()
    raise AssertionError("the lab never came up")


def signal_state(pid: int) -> str:
    """A process's blocked, ignored and caught signals, and its threads' (/proc/PID/status)."""
    lines = []
    for task in sorted(os.listdir(f"/proc/{pid}/task")):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            fields = dict(line.split(":\t", 1) for line in f if ":\t" in line)
        lines.append(f"task {task} ({fields.get('Name', '?').strip()}): " + ", ".join(
            f"{k} {fields.get(k, '?').strip()}" for k in ("State", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")))
        with open(f"/proc/{pid}/task/{task}/wchan") as f:
            lines[-1] += f", wchan {f.read().strip() or '-'}"
    return "\n".join(lines)


def finish(p: subprocess.Popen, timeout: float) -> str:
    """The process's output once it exits; if it does not within `timeout`, its signal
    state and what it printed (then it is killed), so that a hang says where it was."""
    try:
        return p.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        try:
            state = signal_state(p.pid)
        except OSError as e:
            state = f"(unreadable: {e})"
        p.kill()
        out = p.communicate()[0]
        raise AssertionError(f"still running {timeout} s after the signal:\n{state}\n{out[-4000:]}") from None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "n2"])
def test_ctrl_c_and_sigterm_tear_everything_down(tmp_path, xdist, sig):
    """SIGTERM is what CI systems send to a cancelled job: it tears down as Ctrl-C does."""
    run = "c" + os.urandom(2).hex()[:3]
    p = start(run, tmp_path / "ready", "-k", "test_hangs and skb", *xdist)
    made = wait_ready(p, tmp_path / "ready")
    workers = sorted({name.split("-")[2] for name in made})      # xdplab-<run>-<worker>-<seq>-<ns>
    assert labs_and_parking(run) == (sorted(made), [f"xdplab-{run}-{w}-xdp-parking" for w in workers])
    p.send_signal(sig)
    out = finish(p, 60)
    assert p.returncode != 0
    assert "KeyboardInterrupt" in out or "Interrupted" in out or "keyboard" in out.lower(), out
    assert ours(run) == [], out


def test_timeout_expiry_tears_everything_down(tmp_path):
    run = "t" + os.urandom(2).hex()[:3]
    p = start(run, tmp_path / "ready", "-k", "test_hangs and skb", "--timeout=3")
    made = wait_ready(p, tmp_path / "ready")
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 1 and "Timeout" in out, out
    assert made and ours(run) == []


def test_exception_in_a_fixture_tears_everything_down(tmp_path):
    run = "f" + os.urandom(2).hex()[:3]
    p = start(run, tmp_path / "ready", "-k", "test_fixture_raises")
    out, _ = p.communicate(timeout=120)
    assert "1 error" in out and "this fixture breaks on purpose" in out, out
    assert len((tmp_path / "ready").read_text().split()) == 3
    assert ours(run) == []


def test_sigkill_leftovers_are_swept_and_foreign_namespaces_survive(tmp_path):
    run = "k" + os.urandom(2).hex()[:3]
    foreign = f"xdplab-{run}-main-0-fwd-foreign"          # looks like ours, was not made by the lab
    subprocess.run(["ip", "netns", "add", foreign], check=True)
    try:
        p = start(run, tmp_path / "ready", "-k", "test_hangs and drv")
        made = wait_ready(p, tmp_path / "ready")
        p.kill()
        p.communicate(timeout=30)
        parking = f"xdplab-{run}-main-xdp-parking"
        assert sorted(ours(run)) == sorted(made + [foreign, parking]), "SIGKILL leaves the lab's namespaces"
        dead = {x.netns for x in sweep.leftovers() if not x.alive}
        assert set(made + [parking]) <= dead

        r = subproc.run("-m", "lab", "clean")
        assert r.returncode == 0, r.stderr
        for name in made + [parking]:
            assert f"removed {name} (owner pid {p.pid}, gone)" in r.stdout, r.stdout
        assert ours(run) == [foreign], "only what the lab recorded is removed"
        link_check = subprocess.run(["ip", "-n", foreign, "link"], capture_output=True, text=True)
        assert link_check.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "delete", foreign], check=False)


def test_a_new_session_sweeps_what_a_killed_one_left(tmp_path):
    run = "s" + os.urandom(2).hex()[:3]
    p = start(run, tmp_path / "ready", "-k", "test_hangs and skb")
    made = wait_ready(p, tmp_path / "ready")
    p.kill()
    p.communicate(timeout=30)
    assert labs_and_parking(run) == (sorted(made), [f"xdplab-{run}-main-xdp-parking"])
    assert {x.netns for x in sweep.leftovers() if not x.alive} >= set(ours(run))
    r = subproc.run("-m", "pytest", "-q", "tests/unit/test_units.py::test_seed_value_decodes_for_people")
    assert r.returncode == 0, r.stdout
    assert "namespace(s) left by dead lab processes" in r.stdout and made[0] in r.stdout, r.stdout
    assert ours(run) == []


def test_lab_clean_finishes_the_sandboxes_of_a_killed_test_run():
    """A test run killed with its sessions leaves sandboxes (tests/conftest.py own_sandbox)
    whose owner is gone: `python -m lab clean`, outside any sandbox, removes what they hold
    whose owners are gone, and the sandboxes; a sandbox whose owner runs is left alone."""
    run = "d" + os.urandom(2).hex()[:3]
    dead, live = f"dead{run}", f"live{run}"
    code = ("import os, sys; from lab import netns, sweep\n"
            "sweep.claim_sandbox()\n"
            "ns = netns.Netns.create(sys.argv[1])\n"
            "print('made', flush=True)\n"
            "if sys.argv[2] == 'die':\n"
            "    os.kill(os.getpid(), 9)\n"
            "sys.stdin.read()\n"
            "ns.remove()\n"
            "os.unlink(os.path.join(netns.state_root(), sweep.SANDBOX_OWNER))\n"
            "[os.rmdir(d) for d in (sweep.owners_dir(), netns.state_root())]\n")
    killed = subprocess.run([sys.executable, "-c", code, f"xdplab-{run}-main-0-x", "die"], cwd=subproc.ROOT,
                            capture_output=True, text=True, env=subproc.child_env(XDPLAB_SANDBOX=dead))
    assert killed.returncode == -9 and "made" in killed.stdout, killed.stderr
    alive = subprocess.Popen([sys.executable, "-c", code, f"xdplab-{run}l-main-0-x", "wait"], cwd=subproc.ROOT,
                             text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             env=subproc.child_env(XDPLAB_SANDBOX=live))
    try:
        assert alive.stdout.readline() == "made\n"
        env = {k: v for k, v in subproc.child_env().items() if k != "XDPLAB_SANDBOX"}
        r = subproc.run("-m", "lab", "clean", env=env)
        assert r.returncode == 0 and f"removed xdplab-{run}-main-0-x (owner pid " in r.stdout, r.stdout + r.stderr
        assert ours(run) == [], "the dead sandbox's namespace is gone"
        assert not os.path.exists(f"/run/xdplab/sandbox/{dead}"), "and the sandbox"
        assert ours(run + "l") == [f"xdplab-{run}l-main-0-x"], "a live sandbox is left alone"
    finally:
        alive.communicate("", timeout=30)
    assert ours(run + "l") == [] and not os.path.exists(f"/run/xdplab/sandbox/{live}")
