"""Labs kept between tests (lab/pool.py, Lab.reset, lab/inventory.py): a reset lab is
exactly as built; each thing a test can leave behind is named and the lab rebuilt; without
the reading, a leak would reach the next test; the `lab` fixture reuses, warns and honours
lab_fresh; and the whole scenario suite has the same outcomes with kept labs and fresh ones.

    namespace a                namespace b
    v0 10.7.0.1/24 ───────── v1 10.7.0.2/24
"""
from __future__ import annotations

import os
import re
import socket
import xml.etree.ElementTree as ET

import pytest

from lab import bpfsys, ethtool, inventory
from lab.pool import Pool
from lab.programs import PACKAGE_BPF, XdpProgram
from lab.topology import End, Topology, Veth
from tests import subproc

PAIR = Topology((Veth(End("a", "v0", ip="10.7.0.1/24"), End("b", "v1", ip="10.7.0.2/24")),), name="reuse-pair")
RING = f"{PACKAGE_BPF / 'ring.bpf.o'}:xdp_ring_0"
FUZZ_EXAMPLES = 10      # the comparison's fuzz batches (make scenarios draws 60): it compares reuse, not depth
FRAME = bytes.fromhex("02000000000202000000000108004500001c0001000040117b7e0a0700010a0700020001000200080000")


@pytest.fixture
def pool():
    p = Pool()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def program():
    p = XdpProgram(RING)
    try:
        yield p
    finally:
        p.close()


def ipr(lab, ns):
    return lab.ns(ns).ipr


def routes_to_10_9(lab):
    return [r for r in ipr(lab, "a").get_routes() if r.get_attr("RTA_DST") == "10.9.0.0" and r["dst_len"] == 24]


# Each leak: what it does to a kept lab, and the line Lab.reset names it with.
def route(lab, _p):
    ipr(lab, "a").route("add", dst="10.9.0.0/24", oif=lab.iface("a/v0").ifindex)
    return "a: route unicast 10.9.0.0/24 dev v0 table main: added (proto static, scope global)"


def neighbour(lab, _p):
    ipr(lab, "a").neigh("add", dst="10.7.0.9", lladdr="02:00:00:00:00:09", ifindex=lab.iface("a/v0").ifindex,
                        state=0x80)
    return "a: neighbour 10.7.0.9 dev v0: added (lladdr 02:00:00:00:00:09)"


def sysctl(lab, _p):
    lab.run("b", ["sysctl", "-qw", "net.ipv4.conf.v1.forwarding=1"])
    return "b: sysctl net.ipv4.conf.v1.forwarding: written"


def sysctl_in_process(lab, _p):
    lab.ns("a").sysctl("net/ipv4/ip_forward", 0)        # the same value it had: still a write
    return "a: sysctl net.ipv4.ip_forward: written"


def xdp_program(lab, p):
    p.attach(lab.iface("a/v0"), "skb")
    p.attachments.clear()      # "forgotten": the test never detaches it
    return f"a: link v0: xdp none -> skb program {p.info.id}"


def pin_path() -> str:
    return f"/sys/fs/bpf/xdplab-test-reuse-{os.getpid()}"


def pinned_map(lab, p):
    p.attach(lab.iface("b/v1"), "skb")      # detached by the fixture; its map's pin stays
    m = next(iter(p.maps.values()))
    path = pin_path()
    bpfsys.pin(m.fd, path)
    return f"pinned object {path}: added"


def mtu(lab, _p):
    ipr(lab, "b").link("set", index=lab.iface("b/v1").ifindex, mtu=1400)
    return "b: link v1: mtu 1500 -> 1400"


def qdisc(lab, _p):
    lab.run("a", ["tc", "qdisc", "add", "dev", "v0", "clsact"])
    return "a: qdisc clsact dev v0 handle ffff: parent fffffff1: added"


def gro(lab, _p):
    ethtool.set_gro(lab.iface("a/v0"), True)
    return "a: offloads of v0: rx-gro on"


def rps(lab, _p):
    with open(os.path.join(lab.ns("b").sysfs, "class/net/v1/queues/rx-0/rps_cpus"), "w") as f:
        f.write("1")
    return "b: queues v1: rx-0/rps_cpus 0 -> 1"


def address(lab, _p):
    ipr(lab, "b").addr("add", index=lab.iface("b/v1").ifindex, address="10.8.0.1", prefixlen=32)
    return "b: address 10.8.0.1/32 dev v1: added (scope global)"


def rule(lab, _p):
    lab.run("a", ["ip", "rule", "add", "pref", "100", "table", "100"])
    return "a: rule inet pref 100 lookup 100: added"


LEAKS = [route, neighbour, sysctl, sysctl_in_process, xdp_program, pinned_map, mtu, qdisc, gro, rps, address, rule]


@pytest.mark.parametrize("leak", LEAKS, ids=[f.__name__ for f in LEAKS])
def test_each_thing_a_test_leaves_is_named_and_the_lab_rebuilt(pool, program, leak):
    lab = pool.take(PAIR, "off")
    try:
        said = leak(lab, program)
        left = pool.give_back(lab)
    finally:
        if leak is pinned_map and os.path.exists(pin_path()):      # also when the leak itself failed
            os.unlink(pin_path())
        if leak is xdp_program:
            from lab import xdp
            xdp.detach(lab.iface("a/v0"), "skb") if not lab.namespaces["a"].closed else None
    assert said in left, left
    assert all(ns.closed for ns in lab.namespaces.values()), "a lab left changed is closed"
    assert (pool.built, pool.reused, pool.rebuilt) == (1, 0, 1)
    fresh = pool.take(PAIR, "off")
    assert fresh is not lab and pool.built == 2
    assert inventory.differences(fresh, lab.baseline, fresh.baseline) == [], "the new lab is as the first was built"


def test_a_clean_test_leaves_a_lab_that_is_reused_as_built(pool, program):
    """Programs attached and detached, captures and ports, frames through, a neighbour the
    stack is still resolving (flushed): the lab comes back as built, and is handed out again."""
    lab = pool.take(PAIR, "on")
    program.attach(lab.iface("a/v0"), "drv")
    tap = lab.capture("b/v1")
    lab.port("a/v0").send(FRAME, count=10)
    tap.expect(FRAME, count=10)
    with lab.ns("a").socket(socket.AF_INET, socket.SOCK_DGRAM) as s:      # ARP for it: INCOMPLETE
        s.sendto(b"x", ("10.7.0.77", 9))
    learnt = [n for n in ipr(lab, "a").get_neighbours() if n.get_attr("NDA_DST") == "10.7.0.77"]
    assert learnt, "the ping left a neighbour entry the stack learnt"
    program.close()
    before = lab.fates()
    assert pool.give_back(lab) == []
    again = pool.take(PAIR, "on")
    assert again is lab and (pool.built, pool.reused, pool.rebuilt) == (1, 1, 0)
    assert [n for n in ipr(lab, "a").get_neighbours() if n.get_attr("NDA_DST") == "10.7.0.77"] == []
    assert lab.captures == [] and lab.sends == [] and lab.programs == []
    assert before.mapping(), "the first use had fates"
    assert lab.fates().mapping() == {}, "fates start afresh"
    assert 0 < lab.checked_ms < 1000


def test_without_the_route_reading_a_leaked_route_reaches_the_next_test(pool, monkeypatch):
    """The broken variant: an inventory blind to routes lets a leaked route through to the
    next test of the lab. The reading is what stops it."""
    real = inventory._read_namespace

    def blind(ns, short, out):
        real(ns, short, out)
        for key in [k for k in out if k[1] == "route"]:
            del out[key]
    monkeypatch.setattr(inventory, "_read_namespace", blind)
    lab = pool.take(PAIR, "off")
    route(lab, None)
    assert pool.give_back(lab) == []
    again = pool.take(PAIR, "off")
    assert again is lab
    assert routes_to_10_9(again), "the leak reached it"




@subproc.SESSIONS
def test_the_fixture_reuses_warns_about_the_leaker_and_honours_lab_fresh():
    r = subproc.run("-m", "pytest", "-p", "no:cacheprovider", "-n0", "-v", "tests/failing/scenario_leaks.py",
                    timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "4 passed" in out
    warned = re.findall(r"LabLeakWarning: (\S+) left lab 'leaky' changed", out)
    assert warned == ["tests/failing/scenario_leaks.py::test_1_leaves_a_route"], out
    assert "a: route unicast 10.9.0.0/24 dev v0 table main: added" in out
    assert "xdplab: labs: 3 built, 1 reused" in out and "1 rebuilt after a test left them changed" in out, out


def failures(junit) -> str:
    """Each failed scenario and the first lines of its failure, from a JUnit file."""
    if not junit.exists():
        return ""
    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        for c in case:
            if c.tag in ("failure", "error"):
                out.append(f"{case.get('classname')}::{case.get('name')}: {(c.get('message') or '')[:500]}")
    return "\n".join(out) + "\n"


def outcomes(junit) -> dict[str, str]:
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        out[f"{case.get('classname')}::{case.get('name')}"] = kind
    return out


@subproc.SESSIONS
@pytest.mark.timeout(1200)
def test_the_scenarios_pass_alike_with_kept_labs_and_fresh_ones(tmp_path):
    """The whole scenario suite, with labs kept between tests and with a lab per test: the
    same tests, the same outcomes, all passed; no test leaves its lab changed. This is the
    scenario run of `make test` (`make scenarios` runs them once, reporting each)."""
    runs = {}
    started = {reuse: subproc.popen("-m", "pytest", "-p", "no:cacheprovider", "-q", "-n0", "scenarios/",
                                    f"--lab-reuse={reuse}", f"--junitxml={tmp_path / f'{reuse}.xml'}",
                                    env=subproc.child_env(XDPLAB_FUZZ_EXAMPLES=str(FUZZ_EXAMPLES)))
               for reuse in ("on", "off")}       # side by side, one process each: the two cores
    try:
        for reuse, p in started.items():
            out, _ = p.communicate(timeout=1100)
            junit = tmp_path / f"{reuse}.xml"
            assert p.returncode == 0, f"the scenarios with --lab-reuse={reuse}:\n" + failures(junit) + out[-3000:]
            runs[reuse] = (outcomes(junit), out)
    finally:
        for p in started.values():
            if p.poll() is None:
                p.terminate()       # the session tears its labs down on SIGTERM
                p.communicate(timeout=60)
    (kept, said), (fresh, _) = runs["on"], runs["off"]
    assert kept == fresh, {k: (v, fresh.get(k)) for k, v in kept.items() if fresh.get(k) != v}
    assert set(kept.values()) == {"passed"}, {k: v for k, v in kept.items() if v != "passed"}
    assert "LabLeakWarning:" not in said
    built, reused = map(int, re.search(r"labs: (\d+) built, (\d+) reused", said).groups())
    assert "0 rebuilt after a test left them changed" in said
    assert reused > 3 * built, said[-500:]
    assert re.search(rf"labs: {built + reused} built, 0 reused", runs["off"][1]), runs["off"][1][-500:]


def test_where_sysctl_writes_cannot_be_watched_every_lab_is_fresh(pool, monkeypatch):
    """No cgroup v2 or no CONFIG_CGROUP_BPF: the pool says why and builds a lab per test."""
    def unavailable():
        raise inventory.InventoryError("find this process's cgroup", "no cgroup v2 hierarchy is mounted", "mount one")
    monkeypatch.setattr(inventory, "sysctl_watch", unavailable)
    first = pool.take(PAIR, "off")
    assert pool.problem == ("find this process's cgroup: no cgroup v2 hierarchy is mounted; mount one")
    assert pool.give_back(first) == [] and all(ns.closed for ns in first.namespaces.values())
    second = pool.take(PAIR, "off")
    assert second is not first and (pool.built, pool.reused) == (2, 0)


def send_raw(lab, ns: str, ifname: str, frame: bytes, count: int) -> None:
    """Frames onto an interface from a socket of the test's own (not the lab's ports)."""
    with lab.ns(ns).socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
        s.bind((ifname, 0))
        for _ in range(count):
            s.send(frame)


def parked_capture_sees(pool, frames_while_parked: int) -> tuple[object, int]:
    lab = pool.take(PAIR, "off")
    cap, port = lab.capture("b/v1"), lab.port("a/v0")
    port.send(FRAME, count=3)
    cap.expect(FRAME, count=3)
    assert pool.give_back(lab) == []
    send_raw(lab, "a", "v0", FRAME, frames_while_parked)      # while the sockets are kept
    lab.settle()
    assert pool.take(PAIR, "off") is lab
    cap2, port2 = lab.capture("b/v1"), lab.port("a/v0")
    assert cap2.sock is cap.sock and port2.sock is port.sock, "the kept lab's sockets, not new ones"
    cap2.poll()
    seen = len(cap2.pending)
    port2.send(FRAME, count=2)
    return cap2, seen


def test_a_kept_lab_keeps_its_sockets_and_a_parked_capture_starts_empty(pool):
    """Closing an AF_PACKET socket costs an RCU grace period: a kept lab keeps its ports and
    captures for the next test. A capture parked between tests drops what arrives (a filter)
    and starts the next test empty."""
    cap, seen = parked_capture_sees(pool, 5)
    assert seen == 0
    cap.expect(FRAME, count=2)
    cap.expect_no_other()
    assert cap.drops == 0


def test_without_parking_the_next_test_would_see_frames_of_the_time_between(pool, monkeypatch):
    """The broken variant: a socket kept without the filter and the reads sees the 5 frames
    sent between the tests, which are not the next test's."""
    from lab import dataplane
    monkeypatch.setattr(dataplane, "park", lambda sock: None)
    monkeypatch.setattr(dataplane, "unpark", lambda sock: None)
    _, seen = parked_capture_sees(pool, 5)
    assert seen == 5


