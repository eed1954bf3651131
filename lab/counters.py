"""Interface counters, read where they live: each namespace's own sysfs, and ethtool -S.

`/sys/class/net/<if>/statistics/*` is read through a sysfs mounted from inside the
interface's namespace (the root's /sys shows only the root's devices). The veth driver's
per-queue XDP counters (`ethtool -S`) come from the SIOCETHTOOL ioctl on a socket of that
namespace. A `Snapshot` holds both for every interface of a lab; subtracting two gives a
`Delta`, which checks itself against exact expectations.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .ethtool import ethtool_stats

if TYPE_CHECKING:
    from .built import Interface, Lab

def sysfs_stats(iface: "Interface") -> dict[str, int]:
    """All of /sys/class/net/<if>/statistics, as seen from the interface's namespace."""
    d = os.open(os.path.join(iface.ns.sysfs, "class/net", iface.name, "statistics"), os.O_RDONLY | os.O_DIRECTORY)
    out = {}
    try:
        for name in os.listdir(d):
            fd = os.open(name, os.O_RDONLY, dir_fd=d)
            try:
                out[name] = int(os.read(fd, 64))
            finally:
                os.close(fd)
    finally:
        os.close(d)
    return out


def read(iface: "Interface") -> dict[str, int]:
    """sysfs statistics and ethtool counters of one interface, in one dict."""
    out = sysfs_stats(iface)
    out.update(ethtool_stats(iface))
    return out


def veth_hop(mode: str, frames: int, total_bytes: int, sender: str = "net1/veth1", receiver: str = "fwd/veth0",
             queue: int = 0, **extra: int) -> dict[str, dict[str, int]]:
    """The exact counters of `frames` frames (`total_bytes` in all) going from `sender` to its
    veth peer `receiver`, where XDP runs in `mode` ("skb" or "drv"), plus `extra` receiver
    counters. In drv mode the receiver runs NAPI: its rx counters (and the sender's tx ones,
    which veth reports from the same per-queue stats) count skb->len after the Ethernet
    header was pulled, 14 bytes less per frame, and ethtool shows its rx_queue_<queue>_xdp_*."""
    wire = total_bytes - 14 * frames if mode == "drv" else total_bytes
    rx = {"rx_packets": frames, "rx_bytes": wire, **extra}
    if mode == "drv":
        rx.update({f"rx_queue_{queue}_xdp_packets": frames, f"rx_queue_{queue}_xdp_bytes": wire})
    return {sender: {"tx_packets": frames, "tx_bytes": wire}, receiver: rx}


def redirected(mode: str, frames: int, total_bytes: int, egress: str, receiver: str, *,
               napi: bool = False) -> dict[str, dict[str, int]]:
    """The exact counters of `frames` frames that a program in `mode` redirected out of
    `egress` into its veth peer `receiver` (the ingress's own counters: veth_hop, plus
    rx_queue_0_xdp_redirect in drv mode). drv: xdp_frames, counted whole, by the
    transmit's xdp_xmit and the receiver's NAPI. skb: skbs through the normal transmit; a
    receiver that runs NAPI (`napi`: a native XDP program on it) counts them 14 bytes short."""
    if mode == "drv":
        return {egress: {"tx_packets": frames, "tx_bytes": total_bytes, "tx_queue_0_xdp_xmit": frames},
                receiver: {"rx_packets": frames, "rx_bytes": total_bytes, "rx_queue_0_xdp_packets": frames,
                           "rx_queue_0_xdp_bytes": total_bytes}}
    wire = total_bytes - 14 * frames if napi else total_bytes
    rx = {"rx_packets": frames, "rx_bytes": wire}
    if napi:
        rx.update(rx_queue_0_xdp_packets=frames, rx_queue_0_xdp_bytes=wire)
    return {egress: {"tx_packets": frames, "tx_bytes": wire}, receiver: rx}


def merge(*parts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Expectations of several hops added up, interface by interface, counter by counter."""
    out: dict[str, dict[str, int]] = {}
    for part in parts:
        for key, counters in part.items():
            mine = out.setdefault(key, {})
            for c, v in counters.items():
                mine[c] = mine.get(c, 0) + v
    return out


def exact_mismatches(got: Mapping[str, Mapping[str, int]], expected: Mapping[str, Mapping[str, int]],
                     fmt: str = "d") -> list[str]:
    """"where what: expected X, got Y" for every number of {where: {what: n}} that differs,
    a missing one counting as 0 on either side (counters here, fates in lab.fates)."""
    out = []
    for key in sorted(set(got) | set(expected)):
        g, w = got.get(key, {}), expected.get(key, {})
        for c in sorted(set(g) | set(w)):
            if g.get(c, 0) != w.get(c, 0):
                out.append(f"{key} {c}: expected {w.get(c, 0):{fmt}}, got {g.get(c, 0):{fmt}}")
    return out


class Delta(dict[str, dict[str, int]]):
    """Per interface key ("fwd/veth0"), the counters that changed and by how much."""

    def moved(self) -> dict[str, dict[str, int]]:
        return {k: v for k, v in self.items() if v}

    def mismatches(self, expected: Mapping[str, Mapping[str, int]]) -> list[str]:
        """Differences from `expected`: every counter named there must have moved by exactly
        that much, and every counter not named must not have moved at all."""
        return exact_mismatches(self, expected, "+d")

    def check(self, expected: Mapping[str, Mapping[str, int]], about: str = "") -> "Delta":
        """Raise AssertionError unless exactly the `expected` counters moved, by exactly that
        much: each counter that differs, then every counter that moved (assert_counters' text;
        `about` goes first, e.g. the kernel)."""
        bad = self.mismatches(expected)
        if bad:
            raise AssertionError((f"{about}: " if about else "") + "interface counters differ from the expectation:"
                                 "\n  " + "\n  ".join(bad) + "\nall counters that moved:\n" + self.table())
        return self

    def table(self) -> str:
        rows = [f"  {k:<16} {c:<28} {v:+d}" for k, d in sorted(self.items()) for c, v in sorted(d.items())]
        return "\n".join(rows) or "  (no counter moved)"


class Snapshot:
    """Counters of a set of interfaces at one moment."""

    def __init__(self, ifaces: Iterable["Interface"]) -> None:
        self.ifaces = list(ifaces)
        self.values = {i.key: read(i) for i in self.ifaces}
        self.time = time.monotonic()

    @classmethod
    def of(cls, lab: "Lab") -> "Snapshot":
        return cls(lab.interfaces.values())

    def again(self) -> "Snapshot":
        return Snapshot(self.ifaces)

    def __sub__(self, before: "Snapshot") -> Delta:
        d = Delta()
        for key, now in self.values.items():
            was = before.values.get(key, {})
            d[key] = {c: v - was.get(c, 0) for c, v in now.items() if v != was.get(c, 0)}
        return d

    def delta_until(self, expected: Mapping[str, Mapping[str, int]], timeout: float = 2.0) -> Delta:
        """Counters since this snapshot, re-read until they equal `expected` and the kernel has
        finished with every frame sent (lab.settle: a counter expected not to move is checked
        only then), or until `timeout` passes (x pace.slowdown())."""
        from .settle import settled_read
        labs = list({id(i.lab): i.lab for i in self.ifaces}.values())
        return settled_read(labs, lambda: self.again() - self, lambda d: not d.mismatches(expected), timeout)


def assert_counters(before: Snapshot, expected: Mapping[str, Mapping[str, int]], timeout: float = 2.0) -> Delta:
    """Assert that since `before` exactly the `expected` counters moved, by exactly that much."""
    return before.delta_until(expected, timeout).check(expected)
