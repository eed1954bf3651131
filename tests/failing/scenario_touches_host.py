"""A scenario that breaks the rule on purpose: it adds a veth pair to the ROOT namespace and
leaves it (tests/test_host.py runs it in a network namespace of its own). The session must fail for it.

    root namespace:  xlprobe0 ──── xlprobe1     (should never happen)
"""
from pyroute2 import IPRoute


def test_leaves_a_link_in_the_root_namespace():
    with IPRoute() as ipr:
        ipr.link("add", ifname="xlprobe0", kind="veth", peer={"ifname": "xlprobe1"})
