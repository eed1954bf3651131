"""A frozen, side-effect-free description of a lab: namespaces, veth pairs and their ends
(names, MACs, addresses, MTUs, queues), checked without touching the kernel.
`lab.built.build()` makes one real.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from .errors import TopologyError
from .names import check_ifname, check_nsname

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def check_mac(mac: str, *, what: str = "parse MAC address") -> str:
    """Return the MAC in lower case if it parses as aa:bb:cc:dd:ee:ff, else raise."""
    if not isinstance(mac, str) or not _MAC.match(mac):
        raise TopologyError(f"{what} {mac!r}", "not six colon-separated hex bytes",
                            "write it as 02:00:00:00:00:01")
    return mac.lower()


def check_ipv4(addr: str, *, what: str = "parse IPv4 address") -> str:
    """Return `addr` ("a.b.c.d") if it parses as an IPv4 address, else raise."""
    try:
        if not isinstance(addr, str):        # IPv4Address(5) would be 0.0.0.5
            raise TypeError(addr)
        return str(ipaddress.IPv4Address(addr))
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise TopologyError(f"{what} {addr!r}", "not a dotted-quad IPv4 address",
                            "write it as 192.168.0.1") from None


def _auto_mac(ns: str, ifname: str) -> str:
    """A stable, locally administered unicast MAC for an end without one."""
    h = hashlib.sha256(f"{ns}/{ifname}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:5])


@dataclass(frozen=True)
class End:
    """One end of a veth pair: its namespace, name, MAC, IPv4 address with prefix, MTU."""
    ns: str
    name: str
    mac: str | None = None
    ip: str | None = None          # "192.168.1.1/24"
    mtu: int = 1500
    rx_queues: int = 1
    tx_queues: int = 1
    queues: int | None = None      # both counts at once: End("fwd", "veth0", queues=4)

    def __post_init__(self) -> None:
        if isinstance(self.queues, int) and not isinstance(self.queues, bool):
            if (self.rx_queues, self.tx_queues) != (1, 1) and (self.rx_queues, self.tx_queues) != (self.queues,) * 2:
                raise TopologyError(f"set queues of {self.ns}/{self.name}",
                                    f"queues={self.queues} and rx_queues={self.rx_queues}, "
                                    f"tx_queues={self.tx_queues} disagree", "give queues=N alone, or "
                                    "rx_queues and tx_queues")
            object.__setattr__(self, "rx_queues", self.queues)
            object.__setattr__(self, "tx_queues", self.queues)

    @property
    def key(self) -> str:
        return f"{self.ns}/{self.name}"

    def resolved_mac(self) -> str:
        return self.mac.lower() if self.mac else _auto_mac(self.ns, self.name)

    def validate(self) -> None:
        check_nsname(self.ns)
        check_ifname(self.name, where=f"namespace {self.ns}")
        if self.mac is not None:
            check_mac(self.mac, what=f"parse MAC address of {self.key}")
            if self.mac.replace(":", "").strip("0") == "":
                raise TopologyError(f"parse MAC address of {self.key} {self.mac!r}",
                                    "all zeros: the kernel refuses it for an interface (EADDRNOTAVAIL)",
                                    "use a unicast address such as 02:00:00:00:00:01")
            if int(self.mac[:2], 16) & 1:
                raise TopologyError(f"parse MAC address of {self.key} {self.mac!r}",
                                    "a multicast address (lowest bit of the first byte set)",
                                    "use a unicast address such as 02:00:00:00:00:01")
        if self.ip is not None:
            try:
                ipaddress.IPv4Interface(self.ip)
                if "/" not in self.ip:
                    raise ValueError
            except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError):
                raise TopologyError(f"parse IPv4 address of {self.key} {self.ip!r}",
                                    "not an IPv4 address with a prefix length",
                                    "write it as 192.168.1.1/24") from None
        if self.queues is not None and (not isinstance(self.queues, int) or isinstance(self.queues, bool)):
            raise TopologyError(f"set queues of {self.key}", f"queues={self.queues!r} is not a whole number",
                                "give queues=N (both rx and tx), or rx_queues and tx_queues")
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (self.rx_queues, self.tx_queues)):
            raise TopologyError(f"set queues of {self.key}", f"{self.rx_queues!r} rx, {self.tx_queues!r} tx: "
                                "not whole numbers", "give queues=N")
        if not (1 <= self.rx_queues <= 64 and 1 <= self.tx_queues <= 64):
            raise TopologyError(f"set queues of {self.key}", f"{self.rx_queues} rx, {self.tx_queues} tx: "
                                "each must be 1..64", "use 1 (the default) or a few")
        if not 68 <= self.mtu <= 65535:
            raise TopologyError(f"set MTU of {self.key}", f"{self.mtu} is outside 68..65535",
                                "use an MTU the kernel accepts (1500 for Ethernet)")


def end(spec: str, mac: str | None = None, ip: str | None = None, mtu: int = 1500) -> End:
    """End("ns", "name", ...) from a "ns/name" string."""
    ns, sep, name = spec.partition("/")
    if not sep:
        raise TopologyError(f"parse veth end {spec!r}", "not of the form namespace/interface",
                            "write it as fwd/veth0")
    return End(ns, name, mac, ip, mtu)


@dataclass(frozen=True)
class Veth:
    """A veth pair between two ends (in the same or different namespaces)."""
    a: End
    b: End


@dataclass(frozen=True)
class Topology:
    """Namespaces and veth pairs, as plain data. Namespaces are the ones the ends name,
    plus any listed in `namespaces` (for a namespace with no links)."""
    veths: tuple[Veth, ...]
    namespaces: tuple[str, ...] = ()
    name: str = "lab"

    @property
    def all_namespaces(self) -> tuple[str, ...]:
        seen = dict.fromkeys(self.namespaces)
        for v in self.veths:
            seen.update(dict.fromkeys((v.a.ns, v.b.ns)))
        return tuple(seen)

    @property
    def ends(self) -> tuple[End, ...]:
        return tuple(e for v in self.veths for e in (v.a, v.b))

    def end(self, key: str) -> End:
        for e in self.ends:
            if e.key == key:
                return e
        raise TopologyError(f"find interface {key}", f"topology {self.name!r} has no such interface",
                            f"use one of {', '.join(e.key for e in self.ends)}")

    def peer(self, key: str) -> End:
        for v in self.veths:
            if v.a.key == key:
                return v.b
            if v.b.key == key:
                return v.a
        return self.end(key)  # raises

    def validate(self) -> "Topology":
        """Check everything that can be checked without the kernel; raise TopologyError."""
        for ns in self.namespaces:
            check_nsname(ns)
        keys: set[str] = set()
        for e in self.ends:
            e.validate()
            if e.key in keys:
                raise TopologyError(f"declare interface {e.key}", "declared twice",
                                    "give each interface of a namespace its own name")
            keys.add(e.key)
        macs: dict[str, str] = {}
        for e in self.ends:
            mac = e.resolved_mac()
            if mac in macs:
                raise TopologyError(f"declare MAC address {mac}", f"used by {macs[mac]} and {e.key}",
                                    "give each interface its own MAC")
            macs[mac] = e.key
        return self
