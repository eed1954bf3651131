"""A lab for people: built by `python -m lab up`, left running, found again by the other
commands through its state file (/run/xdplab/up/<lab>.json), removed by `down`.

What stays up without a process: the namespaces (bind-mounted under /run/netns), their
veths, the XDP attachments (netlink attachments outlive the process that made them), and
with them the programs and their maps, which later commands open again by id.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import bpfsys, xdp
from .btf import map_layouts
from .counters import read
from .elf import _raw_layouts
from .errors import LabError
from .maps import MapView, hexbytes
from .names import UpNames
from .netns import Netns
from .spec import LabSpec, load
from .topology import End, Interface, Lab, Topology, Veth, build

STATE_DIR = "/run/xdplab/up"


def _say(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress:
        progress(msg)


def state_path(name: str) -> Path:
    return Path(STATE_DIR) / f"{name}.json"


def running() -> list[str]:
    try:
        return sorted(p[:-5] for p in os.listdir(STATE_DIR) if p.endswith(".json"))
    except FileNotFoundError:
        return []


def find(name: str | None) -> dict[str, Any]:
    """The state of lab `name`, or of the only lab up."""
    labs = running()
    if name is None:
        if len(labs) != 1:
            raise LabError("find the lab", "no lab is up" if not labs else f"{len(labs)} labs are up: {labs}",
                           "start one with `python -m lab up topologies/seed.toml`" if not labs
                           else "name one with --lab NAME")
        name = labs[0]
    if name not in labs:
        raise LabError(f"find lab {name}", "it is not up", f"labs up: {labs or 'none'}; "
                       "start it with `python -m lab up FILE`")
    return json.loads(state_path(name).read_text())


def up(file: str, name: str | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build the lab of `file` and leave it running; returns its state."""
    from .forwarder import XDP_PASS, Forwarder, L2fwd
    from .repro import prepare_peer
    from .trace import new_tag

    spec: LabSpec = load(file)
    labname = name or spec.name
    if state_path(labname).exists():
        raise LabError(f"bring up lab {labname}", "it is already up",
                       f"take it down first (`python -m lab down --lab {labname}`) or use --name")
    _say(progress, f"building {len(spec.topology.all_namespaces)} namespaces and {len(spec.topology.veths)} "
                   f"veth pairs")
    lab = build(Topology(spec.topology.veths, spec.topology.namespaces, labname), UpNames(labname))
    state: dict[str, Any] = {
        "name": labname, "file": str(Path(file).resolve()), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "namespaces": {k: ns.name for k, ns in lab.namespaces.items()},
        "veths": [[asdict(v.a), asdict(v.b)] for v in spec.topology.veths], "forwarder": None}
    try:
        if spec.forwarder is not None:
            f = spec.forwarder
            program = f.resolve(spec.path)
            _say(progress, f"loading {program.source.name} ({program.kind})")
            where = lab.iface(f.attach)
            if f.peers == "pass":
                peers = Forwarder(XDP_PASS)
            for i in lab.interfaces.values():
                if i.nsname == where.nsname and i is not where:
                    prepare_peer(lab, i, f.peers, peers if f.peers == "pass" else None)
            fwd = L2fwd(program)
            _say(progress, f"attaching to {f.attach} in {f.mode} mode")
            att = fwd.attach(where, f.mode)
            for r in spec.routes:
                fwd.route(r.dst, via=lab.iface(r.via), mac=r.mac)
            tag = new_tag(labname)
            fwd.set_trace_tag(tag)
            state["forwarder"] = {"program": str(program.source), "kind": program.kind, "attach": f.attach,
                                  "mode": f.mode, "peers": f.peers, "prog_id": att.prog_id,
                                  "trace_tag": tag if f.debug else None,
                                  "maps": {n: m.info.id for n, m in fwd.maps.items()}}
            for problem in fwd.problems(lab, f.mode):
                _say(progress, f"warning: frames would vanish: {problem}")
        os.makedirs(STATE_DIR, exist_ok=True)
        state_path(labname).write_text(json.dumps(state, indent=2) + "\n")
    except BaseException:
        lab.close()
        raise
    for ns in lab.namespaces.values():      # let go of this process's handles; the lab stays
        ns.release()
    return state


def attach(state: dict[str, Any]) -> Lab:
    """A Lab object for a lab that is up (handles only: closing it leaves the lab up)."""
    veths = tuple(Veth(End(**a), End(**b)) for a, b in state["veths"])
    lab = Lab(Topology(veths, name=state["name"]))
    for short, full in state["namespaces"].items():
        lab.namespaces[short] = Netns.open(full)
        lab.on_close(f"release {full}", lab.namespaces[short].release)
    for v in veths:
        for e in (v.a, v.b):
            ns = lab.namespaces[e.ns]
            index = ns.ipr.link_lookup(ifname=e.name)
            if not index:
                raise LabError(f"find {e.key} in lab {state['name']}", "the interface is gone",
                               "take the lab down and up again")
            lab.interfaces[e.key] = Interface(lab, ns, e.ns, e.name, index[0], e.resolved_mac(),
                                              e.ip.split("/")[0] if e.ip else None)
    return lab


def down(name: str | None, progress: Callable[[str], None] | None = None) -> str:
    """Detach XDP everywhere, delete the namespaces, forget the lab."""
    state = find(name)
    labname = state["name"]
    lab = attach(state)
    try:
        for i in lab.interfaces.values():
            st = xdp.query(i)
            if st.mode is not None:
                _say(progress, f"detaching {st} from {i.key}")
                xdp.detach(i, st.mode)
    finally:
        lab.close()
    for full in state["namespaces"].values():
        _say(progress, f"deleting namespace {full}")
        Netns.open(full).remove()
    state_path(labname).unlink()
    return labname


def maps_of(state: dict[str, Any]) -> dict[str, MapView]:
    """The forwarder's maps, opened again by id (close their fds with close_maps)."""
    out = {}
    for name, map_id in (state["forwarder"] or {}).get("maps", {}).items():
        try:
            fd = bpfsys.map_fd_by_id(map_id)
        except OSError as e:
            raise LabError(f"open map {name} (id {map_id})", e.strerror or str(e),
                           "the forwarder is gone: take the lab down and up again") from None
        info = bpfsys.map_info(fd)
        view = MapView(fd, *(map_layouts(info) or _raw_layouts(info)))
        if name == "l2fwd_map":
            import ipaddress
            view.key_format = lambda raw: str(ipaddress.IPv4Address(raw))
        out[name] = view
    return out


def close_maps(maps: dict[str, MapView]) -> None:
    for m in maps.values():
        os.close(m.fd)


def dump_json(maps: dict[str, MapView]) -> list[dict[str, Any]]:
    out = []
    for name, m in maps.items():
        entries = []
        for k, v in m.items():
            if v is None or (m.info.type in ("array", "percpu_array") and not any(v)):
                continue
            entries.append({"key": hexbytes(k), "value": hexbytes(v), "key_decoded": m.key_format(k),
                            "value_decoded": m.value_layout.unpack(v) if not m.value_layout.is_scalar
                            else m.value_layout.unpack(v)["value"]})
        out.append({"map": name, "id": m.info.id, "type": m.info.type, "key_size": m.info.key_size,
                    "value_size": m.info.value_size, "max_entries": m.info.max_entries,
                    "layout": m.value_layout.describe(), "entries": entries})
    return out


def status_text(state: dict[str, Any]) -> str:
    lab = attach(state)
    try:
        lines = [f"lab {state['name']} (up since {state['created']}, from {state['file']})"]
        f = state["forwarder"]
        if f:
            lines.append(f"forwarder {Path(f['program']).name} ({f['kind']}) on {f['attach']} in {f['mode']} mode, "
                         f"program id {f['prog_id']}, peers: {f['peers']}")
        for short, ns in lab.namespaces.items():
            lines.append(f"\nnamespace {short} ({ns.name})")
            for key, i in lab.interfaces.items():
                if i.nsname != short:
                    continue
                link = i.ns.ipr.get_links(i.ifindex)[0]
                peer = lab.peer(key)
                lines.append(f"  {i.name}@{peer.key}  ifindex {i.ifindex}  {i.mac}  {i.ip or '-'}  "
                             f"{link.get('IFLA_OPERSTATE')}  mtu {link.get('IFLA_MTU')}  {xdp.query(i)}")
                c = read(i)
                lines.append(f"    RX: packets {c['rx_packets']}  bytes {c['rx_bytes']}  dropped {c['rx_dropped']}"
                             f"  errors {c['rx_errors']}")
                lines.append(f"    TX: packets {c['tx_packets']}  bytes {c['tx_bytes']}  dropped {c['tx_dropped']}"
                             f"  errors {c['tx_errors']}")
                extra = {k: v for k, v in c.items() if k.startswith(("rx_queue", "tx_queue")) and v}
                if extra:
                    lines.append("    XDP: " + "  ".join(f"{k} {v}" for k, v in sorted(extra.items())))
        return "\n".join(lines)
    finally:
        lab.close()
