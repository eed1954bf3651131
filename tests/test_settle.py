"""lab.settle: a check that nothing (more) arrived is decided when the kernel has finished with
the frames, not after a fixed wait; frames the kernel still holds (a qdisc's timer, a carrier
thread that has not run yet) are waited for, and ignoring the qdisc makes the check pass
wrongly (the broken variant below).

    a: v0 ──── b: v1
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from lab import settle
from lab.topology import End, Topology, Veth
from tests.test_dataplane import PAIR, frame, lab_topology  # noqa: F401 - the pair, its frame and its fixture


def token_bucket(lab) -> None:
    """A tbf on a/v0 (100 kbit/s, 200-byte burst): it lets a 142-byte frame out every ~11 ms;
    removed after the test (the lab is kept for the next one)."""
    a = lab.iface("a/v0")
    a.ns.ipr.tc("add", "tbf", a.ifindex, rate="100kbit", burst=200, latency="1s")
    lab.on_close("remove the tbf from a/v0", lambda: lab.run("a", ["tc", "qdisc", "del", "dev", "v0", "root"]))


def test_a_negative_check_is_decided_by_the_kernel_going_quiet(lab):
    """No clock: two reads of every frame-carrying thread, nothing running, nothing ran."""
    cap, port = lab.capture("b/v1"), lab.port("a/v0")
    quiet_before, clock_before = settle.decided["quiet"], settle.decided["clock"]
    port.send(frame(), count=100)
    assert len(cap.expect(frame(), count=100)) == 100
    cap.expect_no_other()
    q = lab.settle()
    assert q.settled and not q.busy, q
    assert settle.decided["quiet"] - quiet_before >= 2 and settle.decided["clock"] == clock_before
    assert any(name.startswith("ksoftirqd/") for name in settle.carriers().values())


def test_too_few_frames_fail_at_once_when_the_kernel_is_done(lab):
    """A positive check that cannot be met fails when the kernel is quiet, not at its bound;
    its failure says so."""
    cap, port = lab.capture("b/v1"), lab.port("a/v0")
    port.send(frame(), count=3)
    clock_before = settle.decided["clock"]
    with pytest.raises(AssertionError, match=r"expected 4 matching frame\(s\), got 3 on b/v1[\s\S]*"
                                             r"the kernel was quiet after"):
        cap.expect(frame(), count=4, timeout=60)
    assert settle.decided["clock"] == clock_before


def test_frames_a_qdisc_holds_are_waited_for(lab, monkeypatch):
    """A token bucket on a/v0 (100 kbit/s, 200-byte burst) lets one 142-byte frame through
    and holds the other nine for ~100 ms:
    expect_none sees them (the qdisc's queue is read); without that read it passes wrongly."""
    token_bucket(lab)
    cap, port = lab.capture("b/v1"), lab.port("a/v0")
    f = frame(payload=b"x" * 100)

    port.send(f, count=10)
    with pytest.raises(AssertionError, match=r"expected no frame on b/v1\nRECEIVED: 10 frame"):
        cap.expect_none()
    cap.pending.clear()
    port.send(f, count=10)
    assert lab.settle().settled
    assert cap.poll() == 10

    monkeypatch.setattr(settle, "_busy_qdiscs", lambda lab: [])          # the broken variant
    port.send(f, count=10)
    assert lab.settle().settled
    assert cap.poll() < 10          # settled while the qdisc held frames
    monkeypatch.undo()
    assert lab.settle().settled
    cap.poll()
    assert len(cap.pending) == 20


def test_a_carrier_thread_that_runs_or_ran_is_busy(monkeypatch):
    """The threads' states, read from /proc as for ksoftirqd, cpumap and napi threads: a
    process named like a carrier (listed as one) is busy while it runs and when it ran between
    two reads, idle when it sleeps."""
    code = ("import sys, time, ctypes; ctypes.CDLL(None).prctl(15, b'cpumap/9/map:1'); print('up', flush=True)\n"
            "for line in sys.stdin:\n    t = time.monotonic()\n    while time.monotonic() - t < float(line): pass\n"
            "    print('done', flush=True)")
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        monkeypatch.setattr(settle, "_list_children", lambda: [proc.pid])
        monkeypatch.setattr(settle, "_listed", None)
        assert proc.stdout.readline() == "up\n"
        assert settle.carriers() == {proc.pid: "cpumap/9/map:1"}
        deadline = time.monotonic() + 5
        while settle.threads_busy(None)[0] and time.monotonic() < deadline:
            time.sleep(0.001)                      # until it waits on its stdin
        busy, idle = settle.threads_busy(None)
        assert busy == [], busy
        proc.stdin.write("0.5\n")
        proc.stdin.flush()
        while not settle.threads_busy(None)[0] and time.monotonic() < deadline:
            pass
        assert settle.threads_busy(None)[0] == ["cpumap/9/map:1 is running (state R)"]
        assert proc.stdout.readline() == "done\n"
        while settle.threads_busy(None)[0] and time.monotonic() < deadline:
            time.sleep(0.001)                      # until it waits on its stdin again
        busy, _ = settle.threads_busy(idle)        # asleep again, but it ran since `idle`
        assert busy == ["cpumap/9/map:1 ran"], busy
        proc.stdin.close()
    monkeypatch.undo()
    settle._listed = None


def test_a_lab_with_a_userspace_forwarder_waits_its_bound(lab):
    lab.userspace = "my AF_XDP forwarder"
    q = lab.settle(0.05)
    assert not q.settled and q.busy[-1] == "my AF_XDP forwarder may hold frames (lab.userspace)", q
    assert "decided by the clock" in str(q)


def test_where_the_lab_cannot_see_a_frame_it_waits_its_bound_and_says_why(lab, monkeypatch):
    """RPS finishes a frame by an interrupt on another CPU, a process lab.spawn started may
    send at any time, and in a PID namespace the kernel's threads are not visible: each makes
    the wait fall back to the clock, named."""
    b = lab.iface("b/v1")
    rps = os.path.join(b.ns.sysfs, "class/net", b.name, "queues/rx-0/rps_cpus")
    with open(rps, "w") as f:
        f.write("1")
    q = lab.settle(0.02)
    assert not q.settled and "b/v1 steers frames to other CPUs (RPS: rps_cpus), finished there by an interrupt" \
        in q.busy, q
    with open(rps, "w") as f:
        f.write("0")
    assert lab.settle().settled

    proc = lab.spawn("a", ["sleep", "30"])
    q = lab.settle(0.02)
    assert not q.settled and q.busy[-1] == ("sleep in a is running and may send frames (lab.spawn(..., "
                                            "sends_frames=False) if it does not)"), q
    proc.kill()
    proc.wait()
    lab.spawn("a", ["sleep", "30"], sends_frames=False)
    assert lab.settle().settled

    monkeypatch.setattr(settle, "KTHREADD", 1)        # as in a PID namespace: /proc/1 is not kthreadd
    q = lab.settle(0.02)
    assert not q.settled and q.busy[0].startswith("the kernel's threads are not visible (/proc/1 is "), q


def test_a_positive_check_reads_its_frames_while_it_waits(lab):
    """With the kernel's quiet unknowable (lab.userspace), expect() still returns as soon as
    its frames are there: a token bucket lets the ten out over ~100 ms, and the wait ends
    when the capture has something to read, not at its bound (which would count as decided
    by the clock)."""
    token_bucket(lab)
    lab.userspace = "a forwarder of the test's own"
    cap, port = lab.capture("b/v1"), lab.port("a/v0")
    f = frame(payload=b"x" * 100)
    clock_before = settle.decided["clock"]
    port.send(f, count=10)
    assert len(cap.expect(f, count=10, timeout=5)) == 10
    assert settle.decided["clock"] == clock_before


def test_the_raw_rtnetlink_reads_agree_with_pyroute2(lab):
    """lab.rtnl's XDP state, operstate and qdiscs read the same as pyroute2's parsed answers;
    an interface that is not there is the kernel's ENODEV."""
    from lab import rtnl, xdp
    from lab.peers import XDP_PASS
    from lab.programs import XdpProgram
    a = lab.iface("a/v0")
    assert rtnl.link_xdp(a.ns, a.ifindex) == (0, 0)
    prog = XdpProgram(XDP_PASS)
    try:
        prog.attach(a, "drv")
        parsed = a.ns.ipr.get_links(a.ifindex)[0].get("IFLA_XDP")
        assert rtnl.link_xdp(a.ns, a.ifindex) == (1, parsed.get("IFLA_XDP_PROG_ID"))
        assert xdp.query(a) == xdp.XdpState("drv", parsed.get("IFLA_XDP_PROG_ID"))
    finally:
        prog.close()
    assert rtnl.link_operstate(a.ns, a.ifindex) == a.ns.ipr.get_links(a.ifindex)[0].get("IFLA_OPERSTATE") == "UP"
    assert sorted(rtnl.qdiscs(a.ns)) == sorted((q["index"], q.get_attr("TCA_KIND"), q.get_attr("TCA_STATS")["qlen"],
                                                q["handle"], q["parent"]) for q in a.ns.ipr.get_qdiscs())
    with pytest.raises(OSError) as e:
        rtnl.link_xdp(a.ns, 4242)
    assert e.value.errno == 19


def test_a_raw_build_makes_what_pyroute2_reads():
    """lab.rtnl builds the lab (veth pairs with their MACs, MTUs and queues, the peer made in
    its own namespace, addresses, links up, permanent neighbours): pyroute2 reads back exactly
    what the topology says; a refusal is the kernel's errno."""
    from lab import rtnl
    from lab.built import build
    topo = Topology((Veth(End("a", "v0", "02:00:00:00:0a:00", "10.6.0.1/24", mtu=2000, rx_queues=2, tx_queues=3),
                          End("b", "v1", "02:00:00:00:0b:00", "10.6.0.2/24", mtu=1400)),), name="raw")
    with build(topo, fates="off") as lab:
        for end in (topo.veths[0].a, topo.veths[0].b):
            i = lab.iface(end.key)
            link = i.ns.ipr.get_links(i.ifindex)[0]
            assert (link.get("IFLA_IFNAME"), link.get("IFLA_ADDRESS"), link.get("IFLA_MTU"),
                    link.get("IFLA_NUM_RX_QUEUES"), link.get("IFLA_NUM_TX_QUEUES"), link.get("IFLA_OPERSTATE"),
                    link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")) == \
                (end.name, end.mac, end.mtu, end.rx_queues, end.tx_queues, "UP", "veth")
            assert [(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in i.ns.ipr.get_addr(index=i.ifindex)] == \
                [(end.ip.split("/")[0], 24)]
            peer = lab.peer(end.key)
            assert [(n.get("NDA_DST"), n.get("NDA_LLADDR"), n["state"]) for n in i.ns.ipr.get_neighbours(
                ifindex=i.ifindex)] == [(peer.ip, peer.mac, 0x80)]
        with pytest.raises(rtnl.RtnlError) as e:
            rtnl.add_veth(lab.ns("a"), rtnl.VethEnd("v0", "02:00:00:00:00:01"), rtnl.VethEnd("v9", "02:00:00:00:00:01"),
                          lab.ns("b").fd)
        assert e.value.errno == 17
