"""A frozen, side-effect-free description of a lab, and `build()` that makes it real.

    SEED:   net1                fwd                      net2
           veth1  ─────────  veth0 [l2fwd]   veth2  ─────────  veth3
         192.168.1.2        192.168.1.1   192.168.0.254     192.168.0.1

`build()` creates every object over netlink (no `ip` processes), each veth end directly in
its own namespace, and returns a `Lab` that owns them all and removes them in reverse order
(captures, ports, forwarders' attachments, then the namespaces, which take their veths).
"""
from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import LabError, LinkError, TopologyError
from .names import NameFactory, check_ifname, check_nsname, default_factory
from .netns import Netns

if TYPE_CHECKING:
    from .counters import Snapshot
    from .dataplane import Capture, Port

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


SEED = Topology(
    name="seed",
    veths=(
        Veth(End("net1", "veth1", "02:00:00:00:01:02", "192.168.1.2/24"),
             End("fwd", "veth0", "02:00:00:00:01:01", "192.168.1.1/24")),
        Veth(End("fwd", "veth2", "02:00:00:00:00:fe", "192.168.0.254/24"),
             End("net2", "veth3", "00:00:11:22:33:44", "192.168.0.1/24")),
    ),
)
"""The seed notes' topology: l2fwd on fwd/veth0 forwards to fwd/veth2; veth3 owns
192.168.0.1 and the seed's MAC 00:00:11:22:33:44."""


@dataclass
class Interface:
    """A built interface: where it is and what the kernel gave it."""
    lab: "Lab"
    ns: Netns
    nsname: str        # the topology's short name ("fwd")
    name: str
    ifindex: int
    mac: str
    ip: str | None     # address without prefix

    @property
    def key(self) -> str:
        return f"{self.nsname}/{self.name}"

    def __repr__(self) -> str:
        return f"Interface({self.key}, ifindex={self.ifindex}, mac={self.mac})"

    def __str__(self) -> str:
        return self.key


@dataclass
class Lab:
    """Everything one `build()` made. `close()` undoes it in reverse order (idempotent)."""
    topology: Topology
    namespaces: dict[str, Netns] = field(default_factory=dict)
    interfaces: dict[str, Interface] = field(default_factory=dict)
    _undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    checks: list[Callable[[], None]] = field(default_factory=list)
    """Run before every send (preflight): each raises when traffic would be pointless."""
    captures: list["Capture"] = field(default_factory=list)
    forwarders: list[Any] = field(default_factory=list)
    snapshots: list["Snapshot"] = field(default_factory=list)

    def ns(self, name: str) -> Netns:
        try:
            return self.namespaces[name]
        except KeyError:
            raise TopologyError(f"find namespace {name}", f"lab {self.topology.name!r} has no such namespace",
                                f"use one of {', '.join(self.namespaces)}") from None

    def iface(self, key: str) -> Interface:
        """The interface "ns/name", e.g. lab.iface("fwd/veth0")."""
        try:
            return self.interfaces[key]
        except KeyError:
            self.topology.end(key)  # raises with the list of names
            raise

    def peer(self, key: str) -> Interface:
        return self.iface(self.topology.peer(key).key)

    def port(self, key: str) -> "Port":
        """A sender on interface `key`, closed with the lab."""
        from .dataplane import Port
        p = Port(self.iface(key))
        self.on_close(f"close port on {key}", p.close)
        return p

    def capture(self, key: str) -> "Capture":
        """A capture of what interface `key` receives from now on, closed with the lab."""
        from .dataplane import Capture
        c = Capture(self.iface(key))
        self.on_close(f"close capture on {key}", c.close)
        self.captures.append(c)
        return c

    def snapshot(self) -> "Snapshot":
        """Counters of every interface of the lab, now."""
        from .counters import Snapshot
        snap = Snapshot.of(self)
        self.snapshots.append(snap)
        return snap

    def before_traffic(self) -> None:
        """Run the preflight checks (Port.send calls this)."""
        for check in self.checks:
            check()

    def on_close(self, what: str, fn: Callable[[], None]) -> None:
        """Register an undo step; steps run in reverse order of registration."""
        self._undo.append((what, fn))

    def close(self) -> None:
        """Undo everything, last made first. Goes on after a failed step and raises the
        first failure at the end, so one stuck object never leaks the others."""
        errors: list[str] = []
        first: BaseException | None = None
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - collected and re-raised below
                errors.append(f"{what}: {e}")
                first = first or e
        if first is not None:
            raise LabError(f"tear down lab {self.topology.name}", "; ".join(errors),
                           "run `python -m lab clean` to remove what is left") from first

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _static_neighbours(lab: Lab, v: Veth) -> None:
    """Each end of a veth knows its peer's MAC for good (a permanent neighbour entry), so
    that replies from a namespace's stack never start ARP: a check for "no other frame"
    must not depend on whether a neighbour entry happened to be cached."""
    a, b = lab.interfaces[v.a.key], lab.interfaces[v.b.key]
    for near, far in ((a, b), (b, a)):
        if near.ip and far.ip:
            near.ns.ipr.neigh("add", dst=far.ip, lladdr=far.mac, ifindex=near.ifindex, state=0x80)  # NUD_PERMANENT


def _wait_operstate_up(lab: Lab, timeout: float = 5.0) -> None:
    """Wait until every interface is operationally up. Until linkwatch has run, a veth
    that was just set up has no active qdisc and silently drops what is sent on it."""
    deadline = time.monotonic() + timeout
    pending = dict(lab.interfaces)
    while pending:
        for key, i in list(pending.items()):
            link = i.ns.ipr.get_links(i.ifindex)[0]
            if link.get("IFLA_OPERSTATE") == "UP":
                del pending[key]
        if pending and time.monotonic() > deadline:
            raise LinkError(f"bring up {', '.join(pending)}", f"not operationally up after {timeout} s",
                            "check `ip link` in the namespace: is the peer up?")
        if pending:
            time.sleep(0.001)


def build(topology: Topology, names: NameFactory | None = None) -> Lab:
    """Create the namespaces and veth pairs of `topology`; on any error, remove what was
    made so far and raise."""
    from pyroute2.netlink.exceptions import NetlinkError

    topology.validate()
    names = names or default_factory()
    lab = Lab(topology)
    try:
        for short in topology.all_namespaces:
            ns = Netns.create(names.netns(short), names.owner)
            lab.namespaces[short] = ns
            lab.on_close(f"delete namespace {ns.name}", ns.close)
        for v in topology.veths:
            a_ns, b_ns = lab.namespaces[v.a.ns], lab.namespaces[v.b.ns]
            action = f"create veth {v.a.key} -- {v.b.key}"
            try:
                a_ns.ipr.link("add", ifname=v.a.name, kind="veth", address=v.a.resolved_mac(), mtu=v.a.mtu,
                              num_rx_queues=v.a.rx_queues, num_tx_queues=v.a.tx_queues,
                              peer={"ifname": v.b.name, "address": v.b.resolved_mac(), "mtu": v.b.mtu,
                                    "num_rx_queues": v.b.rx_queues, "num_tx_queues": v.b.tx_queues,
                                    "net_ns_fd": b_ns.fd})
            except NetlinkError as e:
                raise LinkError(action, e.args[1] if len(e.args) > 1 else str(e),
                                "check the names and MTUs", errno=e.code) from None
            # No undo step of its own: a veth goes with its namespace. Deleting a namespace
            # unregisters all its devices (and their peers) in one batch, one RCU grace period
            # for them all instead of one per `ip link del` (~25 ms each here).
            for e, ns in ((v.a, a_ns), (v.b, b_ns)):
                index = ns.ipr.link_lookup(ifname=e.name)[0]
                if e.ip:
                    addr, plen = e.ip.split("/")
                    ns.ipr.addr("add", index=index, address=addr, prefixlen=int(plen))
                lab.interfaces[e.key] = Interface(lab, ns, e.ns, e.name, index, e.resolved_mac(),
                                                  e.ip.split("/")[0] if e.ip else None)
            for e, ns in ((v.a, a_ns), (v.b, b_ns)):
                ns.ipr.link("set", index=lab.interfaces[e.key].ifindex, state="up")
            _static_neighbours(lab, v)
        _wait_operstate_up(lab)
    except BaseException:
        with contextlib.suppress(LabError):
            lab.close()
        raise
    return lab
