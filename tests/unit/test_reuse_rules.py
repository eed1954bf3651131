"""How a kept lab's readings are compared and how tests are ordered to share labs: no root."""
from __future__ import annotations

from lab import inventory
from lab.topology import End, Topology, Veth

PAIR = Topology((Veth(End("a", "v0"), End("b", "v1")),), name="reuse-pair")     # a second topology


def test_differences_are_said_field_by_field():
    before = inventory.Inventory({("fwd", "link", "veth0"): {"mtu": "1500", "xdp": "none"}},
                                 {"fwd": {"net.ipv4.ip_forward": 1}})
    now = inventory.Inventory({("fwd", "link", "veth0"): {"mtu": "9000", "xdp": "none"},
                               ("fwd", "route", "unicast 10.9.0.0/24 dev veth0 table main"): {"via": "-",
                                                                                             "proto": "boot"}},
                              {"fwd": {"net.ipv4.ip_forward": 3}}, frozenset({"/sys/fs/bpf/m"}))
    assert inventory.differences(None, before, now) == [
        "fwd: link veth0: mtu 1500 -> 9000",
        "fwd: route unicast 10.9.0.0/24 dev veth0 table main: added (proto boot)",
        "fwd: sysctl net.ipv4.ip_forward: written",
        "pinned object /sys/fs/bpf/m: added"]
    assert inventory.differences(None, now, now) == []


def test_tests_sharing_a_lab_and_a_mode_run_one_after_another():
    """The plugin reorders a module's tests so that those with the same lab topology and XDP
    mode are neighbours (a kept lab serves them in a row); modules keep their order, and so
    do the tests inside a group."""
    from types import SimpleNamespace

    from lab.plugin import _group_by_lab

    def item(name, path, **params):
        return SimpleNamespace(name=name, fspath=path, callspec=SimpleNamespace(params=params))
    items = [item("a", "m.py", xdp_mode="skb"), item("a", "m.py", xdp_mode="drv"),
             item("b", "m.py", xdp_mode="skb", lab_topology=PAIR), item("b", "m.py", xdp_mode="drv", lab_topology=PAIR),
             item("c", "m.py", xdp_mode="skb"), item("d", "n.py", xdp_mode="drv"), item("e", "n.py", xdp_mode="skb")]
    _group_by_lab(items)
    assert [(i.fspath, i.name, i.callspec.params["xdp_mode"]) for i in items] == [
        ("m.py", "a", "skb"), ("m.py", "c", "skb"), ("m.py", "a", "drv"), ("m.py", "b", "skb"), ("m.py", "b", "drv"),
        ("n.py", "d", "drv"), ("n.py", "e", "skb")]
