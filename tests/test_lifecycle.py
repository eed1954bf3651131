"""`lab up` and `lab down` killed at every step they take (XDPLAB_KILL_AT, lab/killpoints.py):
what is left is a lab in a known phase that `lab down` or `lab clean` finishes without
--force, and nothing of the lab remains afterwards; two `up`s of one name at once."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from lab import names, netns, sweep, uplab
from tests import subproc

pytestmark = subproc.SESSIONS

# The seed's lab with the clang-built forwarder: the same namespaces, program, maps and
# entries as topologies/seed.toml, without a bcc compile in every `lab up` (~1 s each).
SEED_ELF = subproc.ROOT / "build" / "seed-elf.toml"


@pytest.fixture(scope="module", autouse=True)
def seed_elf() -> None:
    text = (subproc.ROOT / "topologies" / "seed.toml").read_text()
    text = text.replace('"../bpf/l2fwd.c:xdp_l2fwd"', f'"{subproc.ROOT}/bpf/l2fwd.bpf.o:xdp_l2fwd"')
    text = "\n".join(line for line in text.splitlines() if not line.startswith("cflags"))
    assert "l2fwd.bpf.o" in text
    SEED_ELF.parent.mkdir(exist_ok=True)
    tmp = SEED_ELF.with_suffix(f".{os.getpid()}")
    tmp.write_text(text + "\n")
    tmp.replace(SEED_ELF)          # whole: another worker may be reading it


UP_POINTS = ["up claimed", "netns file created#2", "netns recorded#3", "up built", "up attached", "up programmed"]
DOWN_POINTS = ["down claimed", "down deleted a namespace#1", "down deleted a namespace#2"]


def lab(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subproc.run("-m", "lab", *args, timeout=timeout, env=subproc.child_env(**env))


def leftovers(name: str) -> list[str]:
    """Everything of lab `name` that exists: namespaces (mounted or not), owner records, its
    state file, its pins."""
    prefix = f"xdplab-up-{name}{names.UP_SEPARATOR}"
    found = [f"/run/netns/{n}" for n in os.listdir("/run/netns") if n.startswith(prefix)] \
        if os.path.isdir("/run/netns") else []
    found += [f"owner record {n}" for n in os.listdir(sweep.owners_dir()) if n.startswith(prefix)] \
        if os.path.isdir(sweep.owners_dir()) else []
    if uplab.state_path(name).exists():
        found.append(str(uplab.state_path(name)))
    if os.path.exists(f"{sweep.pin_root()}/up-{name}"):
        found.append(f"{sweep.pin_root()}/up-{name}")
    return found


def ip_netns_list_shows_none_of(name: str) -> None:
    """`ip netns list` works and lists nothing of lab `name`. (Its "Peer netns reference is
    invalid" lines may come from another test's lab killed half-way at that moment: the
    files of this lab are checked by leftovers().)"""
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    assert r.returncode == 0 and f"xdplab-up-{name}{names.UP_SEPARATOR}" not in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("point", UP_POINTS)
def test_an_up_killed_at_each_step_is_removed_by_down_without_force(point):
    remove_a_killed_up(point, "down")


@pytest.mark.parametrize("point", ["netns recorded#3", "up attached"])
def test_an_up_killed_part_way_is_removed_by_clean_without_force(point):
    remove_a_killed_up(point, "clean")


def remove_a_killed_up(point: str, recover: str) -> None:
    name = f"k{os.getpid()}"
    r = lab("up", str(SEED_ELF), "--name", name, XDPLAB_KILL_AT=point)
    assert r.returncode == -signal.SIGKILL, r.stderr
    try:
        half = f"lab {name} was left half-built: pid "
        r = lab("status", "--lab", name)
        assert r.returncode == 1 and r.stderr.startswith(f"python -m lab status: use lab {name}: {half}") and \
            r.stderr.rstrip().endswith(f"remove what is left: python -m lab down --lab {name}"), r.stderr
        r = lab("up", str(SEED_ELF), "--name", name)
        assert r.returncode == 1 and half in r.stderr, r.stderr
    finally:
        r = lab("down", "--lab", name) if recover == "down" else lab("clean")
    if recover == "down":
        assert r.returncode == 0 and r.stdout == f"lab {name} is down\n", r.stderr
    else:
        assert r.returncode == 0 and f"finished removing lab {name} (left half-built by pid " in r.stdout, r.stdout
    assert leftovers(name) == []
    ip_netns_list_shows_none_of(name)


@pytest.mark.parametrize("point", DOWN_POINTS)
@pytest.mark.parametrize("recover", ["down", "clean"])
def test_a_down_killed_at_each_step_is_finished_by_down_or_clean(point, recover):
    name = f"d{os.getpid()}"
    assert lab("up", str(SEED_ELF), "--name", name).returncode == 0
    r = lab("down", "--lab", name, XDPLAB_KILL_AT=point)
    assert r.returncode == -signal.SIGKILL, r.stderr
    r = lab("status", "--lab", name)
    assert r.returncode == 1 and f"lab {name} was left half-removed: pid " in r.stderr, r.stderr
    if recover == "down":
        r = lab("down", "--lab", name)
        assert r.returncode == 0, r.stderr
    else:
        r = lab("clean")
        assert r.returncode == 0 and f"finished removing lab {name} (left half-removed by pid " in r.stdout, \
            r.stdout + r.stderr
    assert leftovers(name) == []
    ip_netns_list_shows_none_of(name)


def test_two_ups_of_one_name_at_once_and_a_live_owner_is_never_swept():
    name = f"c{os.getpid()}"
    first = subproc.popen("-m", "lab", "up", str(SEED_ELF), "--name", name,
                          env=subproc.child_env(XDPLAB_STOP_AT="up built"))
    try:
        deadline = time.monotonic() + 60
        while (uplab.read_state(name) or {}).get("phase") != "building" or \
                open(f"/proc/{first.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "T":
            assert time.monotonic() < deadline, "the first up never stopped at 'up built'"
            time.sleep(0.05)
        r = lab("up", str(SEED_ELF), "--name", name)
        assert r.returncode == 1 and f"lab {name} is being brought up by pid {first.pid}" in r.stderr, r.stderr
        r = lab("down", "--lab", name)
        assert r.returncode == 1 and f"lab {name} is being brought up by pid {first.pid}" in r.stderr, r.stderr
        r = lab("clean")
        assert r.returncode == 0 and f"is being brought up by pid {first.pid}; --force removes it" in r.stdout
        assert all(n in netns.list_names() for n in uplab.read_state(name)["namespaces"].values())
    finally:
        first.send_signal(signal.SIGCONT)
        assert first.wait(60) == 0, first.stdout.read()
    assert lab("down", "--lab", name).returncode == 0
    assert leftovers(name) == []


def test_up_names_never_collide():
    assert names.UpNames("a-x").netns("n1") != names.UpNames("a").netns("x-n1")


def test_a_zombie_owner_counts_as_gone():
    """A SIGKILLed owner that its parent has not reaped yet is a zombie: its pid and start
    time still match, but it is gone, and `clean` removes what it left at once."""
    code = ("import os; from lab.netns import Netns; ns = Netns.create(f'xdplab-zombie-{os.getpid()}'); "
            "print(ns.name, flush=True); os.kill(os.getpid(), 9)")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=subproc.ROOT, stdout=subprocess.PIPE,
                             text=True, env=subproc.child_env())
    try:
        name = child.stdout.readline().strip()
        deadline = time.monotonic() + 10
        while not sweep.zombie(child.pid):          # dead, not reaped: we do not wait() yet
            assert time.monotonic() < deadline
            time.sleep(0.01)
        [left] = [x for x in sweep.leftovers() if x.netns == name]
        assert (left.pid, left.alive) == (child.pid, False)
        r = lab("clean")
        assert f"removed {name} (owner pid {child.pid}, gone)" in r.stdout, r.stdout
        assert name not in netns.list_names()
    finally:
        child.wait()


def test_a_sandbox_sweeps_only_its_own_leftovers(own_sandbox):
    """Two tests that kill sessions run side by side, each in a sandbox: what a killed child
    left in another sandbox is not swept by this one's `clean`, and that sandbox's own `clean`
    removes it (a sweep shared by all, as before the sandboxes, takes it from the wrong test)."""
    other = f"{own_sandbox}-other"
    code = ("import os; from lab.netns import Netns; ns = Netns.create(f'xdplab-sandboxed-{os.getpid()}'); "
            "print(ns.name, flush=True); os.kill(os.getpid(), 9)")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=subproc.ROOT, stdout=subprocess.PIPE, text=True,
                             env=subproc.child_env(XDPLAB_SANDBOX=other))
    name = child.stdout.readline().strip()
    child.wait()
    try:
        r = lab("clean")
        assert r.returncode == 0 and name not in r.stdout and name in netns.list_names(), r.stdout
        assert [x.netns for x in sweep.leftovers()] == [], "this sandbox records nothing of the other's"
        r = lab("clean", XDPLAB_SANDBOX=other)
        assert f"removed {name} (owner pid {child.pid}, gone)" in r.stdout, r.stdout
        assert name not in netns.list_names()
    finally:
        if name in netns.list_names():
            lab("clean", XDPLAB_SANDBOX=other)
        for d in ("owners", "sysfs", ""):
            with contextlib.suppress(OSError):
                os.rmdir(f"{netns.STATE_BASE}/sandbox/{other}/{d}".rstrip("/"))
