"""Root tests of ports and captures on a real veth pair: claims, reports, drop accounting."""
from __future__ import annotations

import os
import time

import pytest

from lab.counters import assert_counters, veth_hop
from lab.errors import DataplaneError
from lab.fates import assert_fates, fates_before
from lab.packets import Mask, udp_frame
from lab.programs import PACKAGE_BPF, Program
from lab.topology import End, Topology, Veth

PAIR = Topology((Veth(End("a", "v0", "02:00:00:00:0a:00"), End("b", "v1", "02:00:00:00:0b:00")),), name="pair")


@pytest.fixture
def lab_topology():
    return PAIR


def frame(**kw):
    return udp_frame(eth_src="02:00:00:00:0a:00", eth_dst="02:00:00:00:0b:00", ip_src="10.9.0.1",
                     ip_dst="10.9.0.2", **kw)


def test_expect_claims_matching_frames_and_expect_no_other_reports_the_rest(lab):
    cap, port = lab.capture("b/v1"), lab.port("a/v0")
    port.send(frame(ttl=1), count=3)
    port.send(frame(ttl=2), count=2)
    assert len(cap.expect(frame(ttl=1), count=3)) == 3
    with pytest.raises(AssertionError) as e:
        cap.expect_no_other()
    text = str(e.value)
    assert text.startswith("expected no frame on b/v1\nRECEIVED: 2 frame(s) not matched:")
    assert "capture drops: 0" in text
    assert len(cap.received) == 5


def test_expect_failure_shows_expected_and_received_side_by_side(lab):
    cap, port = lab.capture("b/v1"), lab.port("a/v0")
    port.send(frame(ttl=9))
    with pytest.raises(AssertionError) as e:
        cap.expect(frame(ttl=10), timeout=0.3)
    text = str(e.value)
    assert text.startswith("expected 1 matching frame(s), got 0 on b/v1\nEXPECTED: 02:00:00:00:0a:00 > "
                           "02:00:00:00:0b:00 IP / UDP 10.9.0.1:1234 > 10.9.0.2:5678 / Raw, 56 bytes")
    assert "RECEIVED: 1 frame(s) not matched:" in text
    assert "differs in IP.ttl: expected 10, received 9" in text
    assert cap.expect(Mask(frame(ttl=10)).dont_care("IP.ttl", "IP.chksum")), "a mask claims the same frame"


def test_capture_sees_only_what_the_interface_receives(lab):
    sender_side = lab.capture("a/v0")
    lab.port("a/v0").send(frame(), count=4)
    sender_side.expect_none()      # outgoing frames are ignored (PACKET_IGNORE_OUTGOING)


def test_capture_counts_its_own_drops_and_expect_none_shows_them(lab):
    cap = lab.capture("b/v1", rcvbuf=4096)       # far too small on purpose
    fates = fates_before(lab)
    lab.port("a/v0").send(frame(), count=1000)
    deadline = time.monotonic() + 2
    while len(cap.received) + cap.drops < 1000 and time.monotonic() < deadline:
        cap.poll(0.01)
    assert cap.drops > 0
    assert len(cap.received) + cap.drops == 1000, "every frame is either received or counted as dropped"
    with pytest.raises(AssertionError, match=f"capture drops: {cap.drops}"):
        cap.expect_none()
    # the kernel's word: b's stack drops every frame (the address is not b's), and the
    # capture's socket counted its own drops (no tracepoint fires for a tap's drop)
    assert_fates(fates, {"b/v1": {"kfree_skb IP_INADDRERRORS": 1000, "af_packet tp_drops": cap.drops}})



QUEUED = Topology((Veth(End("a", "v0", "02:00:00:00:0a:00", queues=3), End("b", "v1", "02:00:00:00:0b:00", queues=3)),),
                  name="queued")


@pytest.mark.parametrize("lab_topology", [QUEUED], ids=["3-queues"])
def test_send_on_a_queue_steers_every_frame_and_puts_xps_and_affinity_back(lab, xdp_program):
    """A native program on v1 makes it receive through NAPI, which counts per queue."""
    v0, v1 = lab.iface("a/v0"), lab.iface("b/v1")
    xdp_program(Program(PACKAGE_BPF / "queues.bpf.o", "xdp_queue")).attach(v1, "drv")
    xps = [os.path.join(v0.ns.sysfs, "class/net/v0/queues", f"tx-{q}", "xps_cpus") for q in range(3)]
    masks, cpus = [open(f).read() for f in xps], os.sched_getaffinity(0)
    port, raw = lab.port("a/v0"), bytes(frame())
    for queue, count in ((2, 7), (0, 5), (1, 3)):
        before = lab.snapshot()
        port.send(raw, count=count, queue=queue)
        assert_counters(before, veth_hop("drv", count, count * len(raw), "a/v0", "b/v1", queue=queue))
        assert [open(f).read() for f in xps] == masks and os.sched_getaffinity(0) == cpus
    with pytest.raises(DataplaneError) as e:
        port.send(raw, queue=3)
    assert str(e.value) == ("send on a/v0 tx queue 3: a/v0 has 3 tx queue(s); "
                            "send on queue 0 to 2, or give its end tx_queues=4 or more (queues=N sets both)")
    for bad, why in ((-1, "a/v0 has 3 tx queue(s); send on queue 0 to 2"),
                     ("1", "'1' is not a queue number; give queue=N, an int from 0"),
                     (1.0, "1.0 is not a queue number; give queue=N, an int from 0"),
                     (True, "True is not a queue number; give queue=N, an int from 0")):
        with pytest.raises(DataplaneError) as e:
            port.send(raw, queue=bad)
        assert str(e.value) == f"send on a/v0 tx queue {bad!r}: {why}"
    assert [open(f).read() for f in xps] == masks and os.sched_getaffinity(0) == cpus
