"""`python -m lab why` and `status --netns`: the kernel's fates outside pytest, on a lab that
is up and on namespaces the lab did not make (the seed author's hand-built net1 and their
own loader), which it looks at without changing anything."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from lab import host, sweep
from lab.l2fwd.seed import ROUTED, SEED_MAC
from lab.netns import Netns
from lab.packets import udp_frame
from lab.programs import PACKAGE_BPF
from tests import subproc

CTL = subproc.ROOT / "build" / "l2fwdctl"
OBJ = PACKAGE_BPF / "l2fwd.bpf.o"


def lab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subproc.run("-m", "lab", *args, timeout=timeout)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def hand_built():
    """As the seed's author had it, by hand: namespace net1 (here with a unique name), veth0
    (peer veth1) and veth2 (peer veth3, no program), their Go control plane attaching l2fwd
    to veth0 with the seed's flags (drv) and a route out of veth2."""
    name = f"handnet1-{os.getpid()}"
    ip("netns", "add", name)
    try:       # IPv6 off: no DAD, MLD or link-local routes appearing while the test compares snapshots
        for conf in ("all", "default"):
            subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1"],
                           check=True)
        ip("-n", name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
        ip("-n", name, "link", "add", "veth2", "type", "veth", "peer", "name", "veth3")
        for dev in ("veth0", "veth1", "veth2", "veth3"):
            ip("-n", name, "link", "set", dev, "up")
        done = subprocess.run(["ip", "netns", "exec", name, str(CTL), "-obj", str(OBJ), "-iface", "veth0", "-flags",
                               "seed", "-route", f"{ROUTED}=veth2,{SEED_MAC}"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        time.sleep(0.2)                     # operstate up
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def snapshot(name: str) -> dict:
    with Netns.open(name) as ns, ns.entered():
        return host.snapshot()


def test_why_watches_a_hand_built_namespace_names_the_drop_and_changes_nothing(hand_built):
    name = hand_built
    before = snapshot(name)
    why = subproc.popen("-m", "lab", "why", "--netns", name, "--watch", "3", "--json", env=subproc.child_env())
    try:
        deadline = time.monotonic() + 30     # until it watches: it says so on its output
        line = why.stdout.readline()
        assert line.startswith(f"watching namespace(s) {name} for 3.0 s"), line + why.stdout.read()
        with Netns.open(name) as ns:        # the user's own traffic, from veth1
            s = ns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            s.bind(("veth1", 0))
            frame = bytes(udp_frame(eth_dst="02:00:00:00:01:01", ip_dst=ROUTED))
            for _ in range(50):
                s.send(frame)
            s.close()
        out, _ = why.communicate(timeout=max(1, deadline - time.monotonic()))
    finally:
        why.kill()
    assert why.returncode == 0, out
    said = json.loads(out)
    [fate] = said["fates"]
    assert (fate["where"], fate["label"], fate["frames"], fate["dropped"]) == \
        (f"{name}/veth0", f"xdp_redirect_err EOPNOTSUPP -> {name}/veth2", 50, True)
    assert fate["via"].startswith("txport_map[") and fate["program"].startswith("xdp_l2fwd (adopted")
    assert said["lost"] == {} and said["counters"][f"{name}/veth0"]["rx_dropped"] == 50
    changed = [d for d in host.differences(before, snapshot(name)) if not d.startswith("pinned object")]
    assert changed == [], "why changed nothing in the namespace (bpffs is the host's: other tests pin there)"


def test_status_of_a_hand_built_namespace_shows_program_preflight_and_maps(hand_built):
    r = lab("status", "--netns", hand_built, "--iface", "veth0")
    assert r.returncode == 0, r.stderr
    assert f"{hand_built}/veth0  ifindex " in r.stdout and "  xdp id " in r.stdout   # native, as ip link says
    assert f"program xdp_l2fwd (adopted from {hand_built}/veth0) on {hand_built}/veth0 (drv, id " in r.stdout
    assert f"{hand_built}/veth2  ifindex" not in r.stdout, "--iface shows veth0 only"
    for shown in (r.stdout, lab("status", "--netns", hand_built).stdout):   # veth2 named either way
        assert f"-> {hand_built}/veth2 in drv mode: cannot receive" in shown, shown
        assert f"attach an XDP program to {hand_built}/veth3 (xdp_pass)" in shown
        assert "l2fwd_map" in shown and "dst_mac 00:00:11:22:33:44" in shown, shown
    other = f"{hand_built}-far"           # veth3 in a namespace not looked at
    ip("netns", "add", other)
    try:
        ip("-n", hand_built, "link", "set", "veth3", "netns", other)
        r = lab("status", "--netns", hand_built)
        assert r.returncode == 0, r.stderr
        assert f"-> {hand_built}/veth2 in drv mode: cannot receive (XDP features [" in r.stdout and \
            "lack ndo-xmit; its peer is outside the namespaces looked at)" in r.stdout, r.stdout
        assert f"attach an XDP program to the peer of {hand_built}/veth2 (xdp_pass)" in r.stdout
    finally:
        subprocess.run(["ip", "netns", "delete", other], capture_output=True)


def test_commands_at_once_on_one_namespace_and_a_killed_one_leave_no_mount(hand_built):
    """Each process mounts its own view of the namespace's sysfs: six `status` at once all
    answer; a SIGKILLed `why` leaves its view, which `clean` removes and nobody trips on."""
    runs = [subproc.popen("-m", "lab", "status", "--netns", hand_built, env=subproc.child_env()) for _ in range(6)]
    for p in runs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0, out
    why = subproc.popen("-m", "lab", "why", "--netns", hand_built, "--watch", "30", env=subproc.child_env())
    try:
        assert why.stdout.readline().startswith("watching"), "why started"
        deadline = time.monotonic() + 10
        while not [v for v in sweep.sysfs_views(hand_built) if v.endswith(f"@{why.pid}")]:
            assert time.monotonic() < deadline, "why mounted no sysfs view"
            time.sleep(0.05)
    finally:
        why.kill()
        why.wait()
    assert [v for v in sweep.sysfs_views(hand_built) if v.endswith(f"@{why.pid}")], "a SIGKILLed why leaves its view"
    assert lab("status", "--netns", hand_built).returncode == 0
    assert lab("clean").returncode == 0
    assert not [v for v in sweep.sysfs_views(hand_built) if v.endswith(f"@{why.pid}")], "clean removed it"


def test_why_on_a_lab_that_is_up_follows_each_frame(tmp_path):
    name = f"why{os.getpid()}"
    r = lab("up", "topologies/seed.toml", "--name", name)
    assert r.returncode == 0, r.stderr
    try:
        r = lab("why", "--lab", name, "--from", "net1/veth1", "--to", ROUTED, "--count", "40", "--json")
        assert r.returncode == 0, r.stderr
        said = json.loads(r.stdout)
        assert {(f["where"], f["label"]): f["frames"] for f in said["fates"]} == {
            ("fwd/veth0", "xdp_redirect -> fwd/veth2"): 40, ("fwd/veth0", "xdp_devmap_xmit -> fwd/veth2"): 40,
            ("net2/veth3", "kfree_skb NO_SOCKET"): 40}
        [group] = said["dropped_frames"]
        assert (group["send"], group["where"], group["count"]) == (1, "net2/veth3", 40)
        assert bytes.fromhex(group["bytes"])[:6] == bytes.fromhex(SEED_MAC.replace(":", "")), "rewritten"
        r = lab("why", "--lab", name, "--from", "net1/veth1", "--to", ROUTED, "--count", "5")
        assert "send #1 on net1/veth1: 5 x 56 bytes" in r.stdout and "5 x kfree_skb NO_SOCKET" in r.stdout, r.stdout
    finally:
        lab("down", "--lab", name)


@pytest.mark.parametrize("args, message", [
    (["--netns", "no-such-ns"], "python -m lab why: open network namespace no-such-ns: no such namespace; use one of"),
    (["--netns", "x", "--from", "net1/veth1"], "python -m lab why: send frames into existing namespaces: `why "
                                               "--netns` only watches"),
    (["--count", "0", "--from", "net1/veth1"],
     "python -m lab why: argument --count: 0 is not a count from 1 to 1,000,000,000"),
    (["--iface", "veth0"], "python -m lab why: watch interfaces: --iface needs --netns"),
])
def test_why_refuses_bad_input_with_a_fix(args, message):
    r = lab("why", *args)
    assert r.returncode in (1, 2) and r.stderr.startswith(message) and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, "one line"


def test_repro_prints_what_the_kernel_said():
    r = lab("repro", "native-redirect-no-peer", "--frames", "200")
    assert r.returncode == 0, r.stderr
    text = r.stdout[r.stdout.index("what the kernel said"):]
    assert "fwd/veth0        xdp_redirect_err EOPNOTSUPP -> fwd/veth2 via txport_map[" in text
    assert text.split("\n")[1].endswith("200   <-- dropped")
