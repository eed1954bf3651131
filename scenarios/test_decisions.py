"""What l2fwd decides for each kind of frame: one set of scenarios, three backends.

  unit       BPF_PROG_TEST_RUN: no namespaces; the kernel's verdict and output bytes
  live-skb   the seed lab, l2fwd attached in skb mode
  live-drv   the seed lab, l2fwd attached in drv mode (xdp_pass on net2/veth3)

      net1                      fwd                              net2
    veth1 ──────────── veth0 [l2fwd]         veth2 ──────────── veth3
  (frames in)         (tap: passed)        (the egress)       (capture: redirected)

Each test routes 192.168.0.1 to dut.egress_ifindex (fwd/veth2's in the live lab, any devmap
key in the unit backend) with destination MAC
00:00:11:22:33:44, runs its frames and checks verdict, output bytes and redirect target.
`pytest scenarios/ -k unit` is the fast inner loop: no namespace is made.
"""
from __future__ import annotations

import pytest
from corpus import NAMED, NEW_MAC, ROUTED, ipv4


def rewritten(frame: bytes, mac: str = NEW_MAC) -> bytes:
    return bytes.fromhex(mac.replace(":", "")) + frame[6:]


@pytest.fixture
def routed(dut):
    dut.route(ROUTED, dut.egress_ifindex, NEW_MAC)
    return dut


@pytest.mark.parametrize("name", ["routed", "routed-with-options"])
def test_routed_frames_are_redirected_with_the_new_mac(routed, name):
    for frame in NAMED[name]:
        o = routed.run(frame)
        assert (o.verdict, o.target) == ("redirect", routed.egress_ifindex), o
        assert o.output == rewritten(frame), "only the destination MAC may change"


@pytest.mark.parametrize("name", ["unrouted", "arp", "ipv6", "vlan"])
def test_other_frames_are_passed_untouched(routed, name):
    for frame in NAMED[name]:
        o = routed.run(frame)
        assert (o.verdict, o.output) == ("pass", frame), o


@pytest.mark.parametrize("name", ["truncated", "bad-header"])
def test_malformed_frames_are_passed_and_counted(routed, name):
    before = routed.fwd.verdicts()["malformed"]
    for frame in NAMED[name]:
        o = routed.run(frame)
        assert (o.verdict, o.output) == ("pass", frame), (len(frame), o)
    assert routed.fwd.verdicts()["malformed"] - before == len(NAMED[name])


def test_a_route_without_txport_entry_aborts(dut):
    dut.route(ROUTED, dut.egress_ifindex, NEW_MAC, txport=False)
    o = dut.run(ipv4())
    assert (o.verdict, o.output) == ("aborted", None), o


def test_the_seeds_mislaid_value_rewrites_to_zeros(dut):
    dut.route(ROUTED, dut.egress_ifindex, NEW_MAC)
    dut.fwd.set_l2fwd_raw(ROUTED, bytes([dut.egress_ifindex, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x22]))
    o = dut.run(ipv4())
    assert (o.verdict, o.target, o.output) == \
        ("redirect", dut.egress_ifindex, rewritten(ipv4(), "00:00:00:00:00:00")), o
