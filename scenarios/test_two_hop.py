"""Two forwarders in a row: l2fwd on both hops, each its own copy of the object (its own
maps, as one loader per hop would load it), 1,000 frames, both MAC rewrites, exact counters.

      net1                fwdA                              fwdB                         net2
  ┌──────────┐   ┌──────────────────────────────┐   ┌──────────────────────────────┐   ┌──────────┐
  │ veth1    │───│ veth0 [l2fwd A]      veth2   │───│ veth4 [l2fwd B]      veth6   │───│ veth7    │
  │10.0.1.2  │   │ 10.0.1.1          10.0.2.1   │   │ 10.0.2.2          10.0.3.1   │   │10.0.3.2  │
  └──────────┘   └──────────────────────────────┘   └──────────────────────────────┘   └──────────┘
  A: l2fwd_map[10.0.3.2] = {veth2, dst_mac: fwdB/veth4}   B: l2fwd_map[10.0.3.2] = {veth6, net2/veth7}

What the kernel did (6.18): skb mode, every hop counts frames whole as skbs. drv mode, hop A's
redirect reaches veth4 as xdp_frames (veth4 runs NAPI: hop B's program is on it), counted
whole there and redirected again; net2/veth7 has xdp_pass so that fwdB/veth6 takes them.
"""
from __future__ import annotations

import pytest

from lab.counters import assert_counters, merge, redirected, veth_hop
from lab.l2fwd.forwarder import L2fwd, assert_verdicts
from lab.packets import rewrite, udp_frame
from lab.peers import default_peer, peers_ready
from lab.topology import End, Topology, Veth

N = 1000
DST = "10.0.3.2"
TOPOLOGY = Topology((
    Veth(End("net1", "veth1", "02:00:00:01:00:02", "10.0.1.2/24"),
         End("fwdA", "veth0", "02:00:00:01:00:01", "10.0.1.1/24")),
    Veth(End("fwdA", "veth2", "02:00:00:02:00:01", "10.0.2.1/24"),
         End("fwdB", "veth4", "02:00:00:02:00:02", "10.0.2.2/24")),
    Veth(End("fwdB", "veth6", "02:00:00:03:00:01", "10.0.3.1/24"),
         End("net2", "veth7", "02:00:00:03:00:02", "10.0.3.2/24")),
), name="two-hop")


@pytest.fixture
def lab_topology():
    return TOPOLOGY


@pytest.fixture
def hops(lab, l2fwd_program, xdp_mode):
    """l2fwd A on fwdA/veth0 and l2fwd B on fwdB/veth4, both in xdp_mode; xdp_pass on net2/veth7
    in drv mode (hop A's target, veth4, runs hop B's program already)."""
    with L2fwd(l2fwd_program) as a, L2fwd(l2fwd_program.copy("hop-b")) as b:
        with peers_ready(lab, lab.iface("fwdB/veth4"), default_peer(xdp_mode)):
            b.attach(lab.iface("fwdB/veth4"), xdp_mode)
            a.attach(lab.iface("fwdA/veth0"), xdp_mode)
            yield a, b


def test_two_hops_forward_and_rewrite_twice(lab, hops, xdp_mode):
    a, b = hops
    assert a.map("l2fwd_map").info.id != b.map("l2fwd_map").info.id, "each hop has maps of its own"
    a.route(DST, via=lab.iface("fwdA/veth2"), mac=lab.iface("fwdB/veth4").mac)
    frame = udp_frame(eth_src=lab.iface("net1/veth1").mac, eth_dst=lab.iface("fwdA/veth0").mac,
                      ip_src="10.0.1.2", ip_dst=DST)
    # first rewrite: with no route on hop B yet, B passes the frames, and veth4's tap shows A's rewrite
    middle = lab.capture("fwdB/veth4")
    lab.port("net1/veth1").send(frame, count=10)
    middle.expect(rewrite(frame, eth_dst=lab.iface("fwdB/veth4").mac), count=10)
    middle.expect_no_other()
    assert_verdicts(b, {"pass": 10})
    b.clear_maps()

    b.route(DST, via=lab.iface("fwdB/veth6"), mac=lab.iface("net2/veth7").mac)
    egress = lab.capture("net2/veth7")
    before = lab.snapshot()

    lab.port("net1/veth1").send(frame, count=N)

    egress.expect(rewrite(frame, eth_dst=lab.iface("net2/veth7").mac), count=N)   # the second rewrite wins
    egress.expect_no_other()
    assert_verdicts(a, redirect=N + 10)
    assert_verdicts(b, redirect=N)
    L = len(frame)
    extra = {"rx_queue_0_xdp_redirect": N} if xdp_mode == "drv" else {}
    hop_b_in = (redirected(xdp_mode, N, N * L, "fwdA/veth2", "fwdB/veth4") if xdp_mode == "drv"
                else veth_hop("skb", N, N * L, "fwdA/veth2", "fwdB/veth4"))
    assert_counters(before, merge(veth_hop(xdp_mode, N, N * L, "net1/veth1", "fwdA/veth0", **extra),
                                  hop_b_in, {"fwdB/veth4": extra},
                                  redirected(xdp_mode, N, N * L, "fwdB/veth6", "net2/veth7")))
