"""Namespaces and interfaces the lab did not make (a hand-built `ip netns add net1`, another
tool's lab), looked at read-only: their XDP programs adopted (handles only), the preflight
over their redirect targets, their maps decoded from BTF, and the kernel's fates of the
frames there. Nothing in them is created, changed or deleted: closing the Lab lets go of
the handles and leaves the namespaces as they were.
"""
from __future__ import annotations

from .built import Interface, Lab
from .errors import LabError, NetnsError
from .netns import Netns, list_names
from .topology import End, Topology, Veth


def open_existing(namespaces: list[str], ifaces: list[str] | None = None) -> Lab:
    """A Lab of existing namespaces (names as `ip netns list` shows them) and every interface
    in them but lo, keyed "NS/IF" (all of them name redirect targets and peers); `lab.focus`
    holds those asked for ("IF" or "NS/IF"; all when none is), which status shows and why
    watches. XDP programs attached anywhere in them are adopted."""
    if not namespaces:
        raise LabError("look at existing namespaces", "none given", "give --netns NAME (see `ip netns list`)")
    lab = Lab(Topology((), name="+".join(namespaces)))
    try:
        for name in namespaces:
            if name not in list_names():
                raise NetnsError(f"open network namespace {name}", "no such namespace",
                                 f"use one of {', '.join(list_names()) or '(none: ip netns list is empty)'}")
            ns = Netns.open(name)
            lab.namespaces[name] = ns
            lab.on_close(f"release {name}", ns.release)
        wanted = set(ifaces or [])
        for name, ns in lab.namespaces.items():
            for link in ns.ipr.get_links():
                ifname = link.get("IFLA_IFNAME")
                if ifname == "lo":
                    continue
                if not wanted or ifname in wanted or f"{name}/{ifname}" in wanted:
                    lab.focus.append(f"{name}/{ifname}")
                addrs = [a.get("IFA_ADDRESS") for a in ns.ipr.get_addr(index=link["index"], family=2)]
                lab.interfaces[f"{name}/{ifname}"] = Interface(lab, ns, name, ifname, link["index"],
                                                               link.get("IFLA_ADDRESS") or "",
                                                               addrs[0] if addrs else None)
        lab.topology = Topology(_veth_pairs(lab), name=lab.topology.name)
        missing = sorted(w for w in wanted if w not in lab.focus and not any(k.endswith("/" + w) for k in lab.focus))
        if missing:
            raise LabError(f"find interface {', '.join(missing)}", f"not in namespace(s) {', '.join(namespaces)}",
                           "check `ip -n NS link`")
        adopt_all(lab)
    except BaseException:
        lab.close()
        raise
    return lab


def _veth_pairs(lab: Lab) -> tuple[Veth, ...]:
    """The veth pairs with both ends among the lab's interfaces, from each end's IFLA_LINK
    (the peer's ifindex) and IFLA_LINK_NETNSID (the peer's namespace, absent when it is the
    same one)."""
    by_ns_index = {(i.ns.name, i.ifindex): i for i in lab.interfaces.values()}
    pairs: dict[frozenset[str], Veth] = {}
    for i in lab.interfaces.values():
        link = i.ns.ipr.get_links(i.ifindex)[0]
        if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "veth" or link.get("IFLA_LINK") is None:
            continue
        nsid = link.get("IFLA_LINK_NETNSID")
        peer_ns = i.ns.name if nsid is None else next(
            (o.name for o in lab.namespaces.values() if i.ns.ipr.get_netnsid(fd=o.fd).get("nsid") == nsid), None)
        peer = by_ns_index.get((peer_ns, link.get("IFLA_LINK"))) if peer_ns else None
        if peer is not None:
            ends = frozenset((i.key, peer.key))
            pairs.setdefault(ends, Veth(End(i.nsname, i.name, i.mac or None), End(peer.nsname, peer.name,
                                                                                   peer.mac or None)))
    return tuple(pairs.values())


def adopt_all(lab: Lab) -> None:
    """Adopt the XDP program attached to each interface of `lab` (handles only)."""
    from . import xdp
    for key, i in lab.interfaces.items():
        if xdp.query(i).mode is not None:
            lab.adopt(key)


def status_text(lab: Lab) -> str:
    """What is attached where, the preflight over the redirect targets, and the maps."""
    from . import preflight, xdp
    from .counters import read
    lines = []
    for key in lab.focus or list(lab.interfaces):
        i = lab.interfaces[key]
        c = read(i)
        lines.append(f"{key}  ifindex {i.ifindex}  {i.mac}  {i.ip or '-'}  {xdp.query(i)}  "
                     f"rx {c['rx_packets']} (dropped {c['rx_dropped']})  tx {c['tx_packets']} "
                     f"(dropped {c['tx_dropped']})")
    for p in lab.programs:
        runs, _ns = p.run_stats()
        where = ", ".join(f"{i.key} ({mode}, id {pid})" for i, mode, pid in p.placements())
        lines.append(f"\nprogram {p.name} on {where}")
    found = preflight.problems(lab)
    lines.append("\npreflight: " + ("; ".join(found) if found else "every redirect target can receive"))
    seen: set[int] = set()
    for p in lab.programs:
        for m in p.maps.values():
            if m.info.id not in seen:
                seen.add(m.info.id)
                lines.append("\n" + m.dump())
    return "\n".join(lines)
