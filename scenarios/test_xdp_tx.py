"""XDP_TX back out of the ingress veth: what the peer needs in each mode, and the counters.

      net1                          fwd
  ┌──────────────────┐   ┌─────────────────────────────────┐
  │ veth1 [peer set-up:│───│ veth0 [xdp_tx_back: swap MACs, │
  │  none|pass|gro]    │   │        return XDP_TX]           │
  └──────────────────┘   └─────────────────────────────────┘
  N frames net1/veth1 -> fwd/veth0, bounced back to net1/veth1 (which has no address:
  net1's stack drops what comes back, kfree_skb IP_INADDRERRORS)

What the kernel did (Linux 6.18, N frames of L bytes; `pass` is an XDP program on veth1 in
drv mode, `gro` is GRO on veth1):

| mode | veth1 | frames back | counters | what the kernel said |
|---|---|---|---|---|
| skb | none, pass, gro | all | rx/tx on both ends (L, or L-14 where the receiver runs NAPI) | net1/veth1 kfree_skb IP_INADDRERRORS ×N |
| drv | none | none | fwd/veth0 `rx_queue_0_xdp_tx_errors` +N, `tx_dropped` +N; net1/veth1 `rx_dropped` +N | fwd/veth0 `xdp_bulk_tx drops ENXIO` ×N |
| drv | pass | all | fwd/veth0 `rx_queue_0_xdp_tx` +N | fwd/veth0 `xdp_bulk_tx` ×N (sent), then net1's stack drops them |
| **drv** | **gro** | **none, and no counter says so** | fwd/veth0 `rx_queue_0_xdp_tx` +N, nothing on veth1 | **fwd/veth0 `xdp_bulk_tx` ×N: sent** |

The last row: with GRO alone on veth1 the XDP_TX frames are accepted into veth1's ring
(`xdp_bulk_tx` reports them sent, nothing is dropped) but are never delivered: after an XDP_TX
flush, veth wakes the receiving queue only when it runs an XDP program
(veth_xdp_flush in drivers/net/veth.c), and frames the stack sends to veth1 meanwhile are not
GRO-eligible, so they do not wake it either. A devmap redirect into the same veth arrives
(its flush wakes the queue: see test_drops.py's gro rows). Generic (skb) XDP_TX goes
through the normal transmit path and needs nothing of the peer.

Before 5.13 (5.10) GRO does not turn on a veth's NAPI (probed: lab.features.veth_gro_napi),
so the `gro` row is the `none` row there; 5.10's veths also start with GRO on, which the
preflight names as useless.
"""  # noqa: E501 - the table of what the kernel did, a row a line
from __future__ import annotations

import re

import pytest

from lab import ethtool
from lab.counters import assert_counters, merge, veth_hop
from lab.errors import PreflightError
from lab.fates import assert_fates, fates_before
from lab.features import veth_gro_napi
from lab.packets import udp_frame
from lab.programs import PACKAGE_BPF, Program
from lab.topology import End, Topology, Veth

N = 100
TX_BACK = Program(PACKAGE_BPF / "ring.bpf.o", "xdp_tx_back")
TOPOLOGY = Topology((Veth(End("net1", "veth1", "02:00:00:00:01:02"), End("fwd", "veth0", "02:00:00:00:01:01")),),
                    name="xdp-tx")
DROPPED_BY_NET1 = {"net1/veth1": {"kfree_skb IP_INADDRERRORS": N}}


@pytest.fixture
def lab_topology():
    return TOPOLOGY


def expected(mode: str, peer: str, length: int) -> tuple[int, dict, dict]:
    """(frames back, counters, fates) for N frames of `length` bytes (see the table above)."""
    short = length - 14                    # counted by a veth that runs NAPI: Ethernet header pulled
    there = veth_hop(mode, N, N * length)  # net1/veth1 -> fwd/veth0
    if mode == "skb":
        napi = peer == "pass"              # veth1 runs NAPI: it counts the return short, veth0 sends short
        back = {"fwd/veth0": {"tx_packets": N, "tx_bytes": N * (short if napi else length)},
                "net1/veth1": {"rx_packets": N, "rx_bytes": N * (short if napi else length)}}
        if napi:
            back["net1/veth1"].update(rx_queue_0_xdp_packets=N, rx_queue_0_xdp_bytes=N * short)
        return N, merge(there, back), DROPPED_BY_NET1
    if peer == "none" or (peer == "gro" and not veth_gro_napi()):     # GRO: no NAPI before 5.13
        return 0, merge(there, {"fwd/veth0": {"rx_queue_0_xdp_tx_errors": N, "tx_dropped": N},
                                "net1/veth1": {"rx_dropped": N}}), {"fwd/veth0": {"xdp_bulk_tx drops ENXIO": N}}
    there["fwd/veth0"]["rx_queue_0_xdp_tx"] = N
    if peer == "gro":
        return 0, there, {"fwd/veth0": {"xdp_bulk_tx": N}}
    back = {"fwd/veth0": {"tx_packets": N, "tx_bytes": N * length},      # xdp_frames: counted whole
            "net1/veth1": {"rx_packets": N, "rx_bytes": N * length, "rx_queue_0_xdp_packets": N,
                           "rx_queue_0_xdp_bytes": N * length}}
    return N, merge(there, back), {"fwd/veth0": {"xdp_bulk_tx": N}, **DROPPED_BY_NET1}


@pytest.mark.expect_drops
@pytest.mark.parametrize("peer", ["none", "pass", "gro"])
def test_xdp_tx_bounces_frames_back_when_the_peer_can_take_them(lab, xdp_program, xdp_mode, peer):
    veth0, veth1 = lab.iface("fwd/veth0"), lab.iface("net1/veth1")
    tx = xdp_program(TX_BACK)
    if peer == "pass":
        xdp_program(TX_BACK.named("xdp_dummy")).attach(veth1, "drv")
    elif peer == "gro":
        ethtool.set_gro_for_test(veth1, True)
    tx.attach(veth0, xdp_mode)
    frame = udp_frame(eth_src=veth1.mac, eth_dst=veth0.mac)
    bounced = udp_frame(eth_src=veth0.mac, eth_dst=veth1.mac)      # xdp_tx_back swaps the MACs
    back = lab.capture("net1/veth1")
    before, fates = lab.snapshot(), fates_before(lab)

    lab.port("net1/veth1").send(frame, count=N)

    arrive, counters, said = expected(xdp_mode, peer, len(bytes(frame)))
    if arrive:
        assert len(back.expect(bounced, count=N)) == N
    assert_fates(fates, said)           # waits until the kernel has reported every frame's fate
    assert_counters(before, counters)
    back.expect_none()


@pytest.mark.parametrize("peer", ["none", "gro", "pass"])
def test_preflight_refuses_xdp_tx_into_a_peer_that_cannot_take_it(lab, xdp_program, peer):
    """The lab reads the program's instructions (r0 = XDP_TX) and the peer's state before
    traffic: drv mode with no native program on veth1 would lose every bounced frame."""
    veth0, veth1 = lab.iface("fwd/veth0"), lab.iface("net1/veth1")
    if peer == "pass":
        xdp_program(TX_BACK.named("xdp_dummy")).attach(veth1, "drv")
    elif peer == "gro":
        ethtool.set_gro_for_test(veth1, True)
    xdp_program(TX_BACK).attach(veth0, "drv")
    frame = udp_frame(eth_src=veth1.mac, eth_dst=veth0.mac)
    if peer == "pass":
        lab.port("net1/veth1").send(frame)
        return
    with pytest.raises(PreflightError) as refused:
        lab.port("net1/veth1").send(frame)
    gro = ""
    if ethtool.gro(veth1):          # set above, or on by default (5.10)
        gro = (" and GRO on: it accepts the frames and never delivers them" if veth_gro_napi() else
               " and GRO on, which does not turn on a veth's NAPI before Linux 5.13")
    assert re.search(r"ring.bpf.o:xdp_tx_back \(drv on fwd/veth0\) can return XDP_TX \(r0 = 3 at instruction \d+\): "
                     r"in drv mode the frames go back into net1/veth1, which has no xdp" + re.escape(gro) +
                     r"; attach an XDP program to net1/veth1 in drv mode \(xdp_pass\), or attach "
                     r"ring.bpf.o:xdp_tx_back in skb mode", str(refused.value)), str(refused.value)


def test_preflight_reads_the_verdict_not_any_3(lab, xdp_program):
    """xdp_pass_counting returns XDP_PASS; a subprogram of it returns 3 (a map key). The check
    reads only what the main function returns: no refusal, the frames pass (fwd's stack
    drops them: no address)."""
    veth0, veth1 = lab.iface("fwd/veth0"), lab.iface("net1/veth1")
    prog = xdp_program(TX_BACK.named("xdp_pass_counting"))
    prog.attach(veth0, "drv")
    frame = udp_frame(eth_src=veth1.mac, eth_dst=veth0.mac)
    before, fates = lab.snapshot(), fates_before(lab)
    lab.port("net1/veth1").send(frame, count=N)
    assert_counters(before, veth_hop("drv", N, N * len(bytes(frame))))
    assert_fates(fates, {"fwd/veth0": {"kfree_skb IP_INADDRERRORS": N}})
    slots = prog.map("ring_cnt").entries()
    assert {k: v for k, v in slots.items() if v} == {1: N}, "frames under 100 bytes: slot 1, never 3"
