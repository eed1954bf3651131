"""Labs written as TOML files: the topology, the forwarder and its attach mode, and the map
entries. `topologies/seed.toml` is the seed notes' lab; a scenario can load one with
`load("topologies/seed.toml").topology`, and `python -m lab up FILE` builds one for people.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TopologyError
from .forwarder import Program, l2fwd_variant
from .topology import End, Topology, Veth, check_ipv4, check_mac

ROOT = Path(__file__).resolve().parent.parent
END_KEYS = {"ns", "name", "mac", "ip", "mtu", "rx_queues", "tx_queues"}


@dataclass(frozen=True)
class Route:
    dst: str
    via: str
    mac: str


@dataclass(frozen=True)
class ForwarderSpec:
    program: str = "l2fwd"
    kind: str = "bcc"
    attach: str = "fwd/veth0"
    mode: str = "skb"
    peers: str = "none"
    debug: bool = False

    def resolve(self, base: Path) -> Program:
        if self.program == "l2fwd":
            return l2fwd_variant(self.kind, self.debug)
        path = (base / self.program).resolve()
        kind = "elf" if path.suffix == ".o" else "bcc"
        program = Program(path, "xdp_l2fwd", kind=kind)
        return program.with_flags("-DL2FWD_DEBUG") if self.debug and kind == "bcc" else program


@dataclass(frozen=True)
class LabSpec:
    topology: Topology
    forwarder: ForwarderSpec | None
    routes: tuple[Route, ...] = ()
    path: Path = field(default=ROOT)

    @property
    def name(self) -> str:
        return self.topology.name


def _fail(path: Path, where: str, reason: str, fix: str) -> TopologyError:
    return TopologyError(f"read lab file {path} ({where})", reason, fix)


def _end(path: Path, where: str, raw: Any) -> End:
    if not isinstance(raw, dict) or not {"ns", "name"} <= set(raw):
        raise _fail(path, where, "an end needs at least ns and name", 'write { ns = "fwd", name = "veth0" }')
    unknown = set(raw) - END_KEYS
    if unknown:
        raise _fail(path, where, f"unknown keys {sorted(unknown)}", f"use {sorted(END_KEYS)}")
    return End(**raw)


def load(file: str | Path) -> LabSpec:
    """Read and check a lab file; every error names the file, the place and the fix."""
    path = Path(file)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise TopologyError(f"read lab file {path}", "no such file",
                            "give a path such as topologies/seed.toml") from None
    except tomllib.TOMLDecodeError as e:
        raise TopologyError(f"read lab file {path}", f"not valid TOML: {e}", "fix the syntax") from None
    unknown = set(data) - {"name", "forwarder", "veth", "route", "namespaces"}
    if unknown:
        raise _fail(path, "top level", f"unknown keys {sorted(unknown)}", "use name, namespaces, forwarder, veth, route")
    veths = []
    for i, v in enumerate(data.get("veth", [])):
        if set(v) != {"a", "b"}:
            raise _fail(path, f"veth {i + 1}", "a veth has exactly two ends, a and b", "write a = {...} and b = {...}")
        veths.append(Veth(_end(path, f"veth {i + 1} a", v["a"]), _end(path, f"veth {i + 1} b", v["b"])))
    if not veths:
        raise _fail(path, "veth", "no veth pair", "add at least one [[veth]]")
    topology = Topology(tuple(veths), tuple(data.get("namespaces", ())), name=str(data.get("name", path.stem)))
    topology.validate()
    fwd = None
    if "forwarder" in data:
        f = data["forwarder"]
        unknown = set(f) - set(ForwarderSpec.__dataclass_fields__)
        if unknown:
            raise _fail(path, "forwarder", f"unknown keys {sorted(unknown)}",
                        f"use {sorted(ForwarderSpec.__dataclass_fields__)}")
        fwd = ForwarderSpec(**f)
        topology.end(fwd.attach)
        if fwd.mode not in ("skb", "drv") or fwd.peers not in ("none", "pass", "gro"):
            raise _fail(path, "forwarder", f"mode {fwd.mode!r}, peers {fwd.peers!r}",
                        "mode is skb or drv; peers is none, pass or gro")
    routes = []
    for i, r in enumerate(data.get("route", [])):
        if set(r) != {"dst", "via", "mac"}:
            raise _fail(path, f"route {i + 1}", "a route has dst, via and mac", 'write dst = "192.168.0.1", ...')
        topology.end(r["via"])
        routes.append(Route(check_ipv4(r["dst"]), r["via"], check_mac(r["mac"])))
    if routes and fwd is None:
        raise _fail(path, "route", "routes need a [forwarder]", "add a [forwarder] section")
    return LabSpec(topology, fwd, tuple(routes), path.resolve().parent)
