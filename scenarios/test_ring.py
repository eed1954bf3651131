"""One object, several programs, one shared devmap: a selftest-style ring (bpf/ring.bpf.c,
after the kernel's prog_tests/test_xdp_veth.c), with a dummy pass program and an XDP_TX
program on the far ends.

      h0                              ring                                   h1
  ┌──────────────┐   ┌─────────────────────────────────────────┐   ┌────────────────────┐
  │ veth1        │───│ veth0 [xdp_ring_0]      veth2 [xdp_ring_1]│───│ veth3 [xdp_dummy]  │
  │ [xdp_dummy]  │   │                                          │   └────────────────────┘
  └──────────────┘   │              veth4 [xdp_ring_2]           │   ┌────────────────────┐
                     └─────────────────────────────────────────┘───│ veth5 [xdp_tx_back]│ h2
  ring_ports: 0 -> veth2, 1 -> veth4, 2 -> veth0                     └────────────────────┘

  h0 -> veth0 -> ring_0 -> veth2 -> h1/veth3 (xdp_dummy passes them)
  h1 -> veth2 -> ring_1 -> veth4 -> h2/veth5 (xdp_tx_back swaps the MACs, XDP_TX)
        -> veth4 -> ring_2 -> veth0 -> h0/veth1
What the kernel did (6.18): in both modes every frame went round as drawn, ring_cnt[i] = N
for each program, and no drop or error counter of any interface moved. In drv mode every
redirect target's peer runs an XDP program (xdp_dummy, xdp_tx_back, ring_2), as veth needs.
"""
from __future__ import annotations

import pytest

from lab.packets import rewrite, udp_frame
from lab.topology import End, Topology, Veth

N = 200
RING = "../bpf/ring.bpf.o"
TOPOLOGY = Topology((
    Veth(End("h0", "veth1", "02:00:00:00:10:01"), End("ring", "veth0", "02:00:00:00:10:00")),
    Veth(End("ring", "veth2", "02:00:00:00:11:00"), End("h1", "veth3", "02:00:00:00:11:01")),
    Veth(End("ring", "veth4", "02:00:00:00:12:00"), End("h2", "veth5", "02:00:00:00:12:01")),
), name="ring")
"""No addresses: the hosts' stacks drop what reaches them without a word (no ICMP, no ARP)."""

pytestmark = pytest.mark.lab_program(RING)


@pytest.fixture
def lab_topology():
    return TOPOLOGY


@pytest.fixture
def ring(lab, xdp_program, lab_program, xdp_mode):
    """Every program of the object attached as drawn, the devmap filled by interface."""
    progs = {f: xdp_program(lab_program, f) for f in ("xdp_ring_0", "xdp_ring_1", "xdp_ring_2", "xdp_dummy",
                                                      "xdp_tx_back")}
    for f, key in (("xdp_dummy", "h1/veth3"), ("xdp_dummy", "h0/veth1"), ("xdp_tx_back", "h2/veth5"),
                   ("xdp_ring_2", "ring/veth4"), ("xdp_ring_1", "ring/veth2"), ("xdp_ring_0", "ring/veth0")):
        progs[f].attach(lab.iface(key), xdp_mode)
    ports = progs["xdp_ring_0"].map("ring_ports")
    for slot, key in enumerate(("ring/veth2", "ring/veth4", "ring/veth0")):
        ports.put(slot, lab.iface(key))
    return progs


def test_the_programs_of_one_object_share_its_maps(ring):
    ids = {f: p.map("ring_ports").info.id for f, p in ring.items()}
    assert len(set(ids.values())) == 1, f"one devmap for every program of the object: {ids}"
    for f in ("xdp_ring_0", "xdp_ring_1", "xdp_ring_2"):
        assert ids[f] in ring[f].info.map_ids, f"{f} uses the shared ring_ports"
    assert ring["xdp_dummy"].fd != ring["xdp_ring_0"].fd


def test_frames_go_round_the_ring(lab, ring):
    h0, h1, h2 = lab.iface("h0/veth1"), lab.iface("h1/veth3"), lab.iface("h2/veth5")
    to_h1 = udp_frame(eth_src=h0.mac, eth_dst=h1.mac, ip_src="10.9.0.1", ip_dst="10.9.0.2")
    to_h2 = udp_frame(eth_src=h1.mac, eth_dst=h2.mac, ip_src="10.9.0.2", ip_dst="10.9.0.3")
    at_h1, at_h0 = lab.capture("h1/veth3"), lab.capture("h0/veth1")
    before = lab.snapshot()

    lab.port("h0/veth1").send(to_h1, count=N)
    lab.port("h1/veth3").send(to_h2, count=N)

    at_h1.expect(to_h1, count=N)                                          # ring_0, untouched
    at_h0.expect(rewrite(to_h2, eth_src=h2.mac, eth_dst=h1.mac), count=N)  # ring_1, bounced by XDP_TX, ring_2
    at_h1.expect_no_other()
    at_h0.expect_no_other()
    assert ring["xdp_ring_0"].map("ring_cnt").entries() == {0: N, 1: N, 2: N}
    lab.settle()
    d = before.again() - before
    dropped = {k: {c: v for c, v in m.items() if "drop" in c or "err" in c} for k, m in d.items()}
    assert not any(dropped.values()), f"no drop or error counter moves: {dropped}"
    assert d["ring/veth4"]["rx_packets"] == N and d["h2/veth5"]["rx_packets"] == N, d.table()
