"""Shared fixtures of the scenarios: the seed notes' topology unless a module builds another."""
from __future__ import annotations

import pytest

from lab.built import Lab
from lab.l2fwd.forwarder import L2fwd
from lab.l2fwd.seed import EGRESS, ROUTED, SEED, SEED_MAC
from lab.topology import Topology


@pytest.fixture
def lab_topology() -> Topology:
    """The seed's topology (lab.l2fwd.seed.SEED); a module overrides it to build another."""
    return SEED


@pytest.fixture
def routed(lab: Lab, l2fwd: L2fwd) -> L2fwd:
    """The seed's map entries: 192.168.0.1 (ROUTED) out of fwd/veth2 with destination MAC
    00:00:11:22:33:44 (SEED_MAC). Scope: function. Depends on: lab, l2fwd. Example::

        def test_it(lab, routed):
            lab.port("net1/veth1").send(seed_frame(lab), count=10)
            assert_verdicts(routed, redirect=10)
    """
    l2fwd.route(ROUTED, via=lab.iface(EGRESS), mac=SEED_MAC)
    return l2fwd
