"""Scenarios that fail on purpose, run by tests/test_report.py to check the failure report.
Not collected by `pytest tests/` (the name does not start with test_).

      net1                      fwd                           net2
    veth1 ──────────── veth0 [l2fwd skb, debug]   veth2 ──────────── veth3
"""
import pytest

from lab.l2fwd.seed import ROUTED, SEED_MAC, seed_frame


@pytest.mark.xdp_modes("skb")
def test_fails_routed(lab, l2fwd):
    l2fwd.route(ROUTED, via=lab.iface("fwd/veth2"), mac=SEED_MAC)
    egress = lab.capture("net2/veth3")
    lab.port("net1/veth1").send(seed_frame(lab), count=7)
    egress.expect(seed_frame(lab), count=7, timeout=0.5)     # wrong on purpose: the MAC was rewritten


@pytest.mark.xdp_modes("skb")
def test_fails_unrouted(lab, l2fwd):
    egress = lab.capture("fwd/veth0")
    lab.port("net1/veth1").send(seed_frame(lab, "192.168.0.99"), count=5)
    egress.expect(seed_frame(lab, "192.168.0.99"), count=5)
    egress.expect_none()
    assert False, "fails on purpose after passing 5 frames"
