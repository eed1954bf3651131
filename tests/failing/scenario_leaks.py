"""Tests that share a kept lab, one of which leaves it changed (tests/test_reuse.py runs them
in a session of their own, in this order): the leaker is named in a LabLeakWarning, the next
test gets a lab without the leak, and a lab_fresh test changes its own lab freely.

    namespace a                namespace b
    v0 10.7.0.1/24 ───────── v1 10.7.0.2/24
"""
import pytest

from lab.topology import End, Topology, Veth

LEAKY = Topology((Veth(End("a", "v0", ip="10.7.0.1/24"), End("b", "v1", ip="10.7.0.2/24")),), name="leaky")


@pytest.fixture
def lab_topology():
    return LEAKY


def routes_to_10_9(lab):
    return [r for r in lab.ns("a").ipr.get_routes() if r.get_attr("RTA_DST") == "10.9.0.0" and r["dst_len"] == 24]


def test_1_leaves_a_route(lab):
    lab.ns("a").ipr.route("add", dst="10.9.0.0/24", oif=lab.iface("a/v0").ifindex)


def test_2_gets_a_lab_without_it(lab):
    assert routes_to_10_9(lab) == []


@pytest.mark.lab_fresh
def test_3_changes_its_own_lab(lab):
    lab.ns("b").ipr.link("set", index=lab.iface("b/v1").ifindex, mtu=1400)


def test_4_reuses_the_lab_of_test_2(lab):
    assert routes_to_10_9(lab) == []
    assert lab.ns("b").ipr.get_links(lab.iface("b/v1").ifindex)[0].get("IFLA_MTU") == 1500
