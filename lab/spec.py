"""Labs written as TOML files: the topology, the programs and where they attach, and map
entries. `topologies/seed.toml` is the seed notes' lab; a scenario can load one with
`load("topologies/seed.toml").topology`, and `python -m lab up FILE` builds one for people.

    [[veth]]      a = { ns = "fwd", name = "veth0", mac = "...", ip = "10.0.0.1/24", mtu = 1500, queues = 2 },
                  b = {...}  (queues: rx and tx queues at once; or rx_queues, tx_queues)
    [[program]]   program = "PATH[:FUNCTION]" (from the file's folder), attach = "ns/if" (or a list),
                  mode = "skb" | "drv", peers = "none" | "pass" | "gro" (default: lab.peers.default_peer,
                  "pass" in drv mode), cflags = [...] (bcc only)
    [[entry]]     map = "name", key = ..., value = ...: ints, "ns/if" (that interface's ifindex,
                  written from its namespace), IPv4 and MAC strings, tables by field name
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LabError, TopologyError
from .peers import PEERS, default_peer
from .programs import Program
from .topology import End, Topology, Veth
from .xdp import MODES

ROOT = Path(__file__).resolve().parent.parent
END_KEYS = {"ns": str, "name": str, "mac": str, "ip": str, "mtu": int, "rx_queues": int, "tx_queues": int,
            "queues": int}
PROGRAM_KEYS = {"program": str, "attach": (str, list), "mode": str, "peers": str, "cflags": list}
ENTRY_KEYS = {"map", "key", "value"}


Toml = Any
"""A value of a lab file as tomllib reads it (checked by _typed and _table before use)."""


@dataclass(frozen=True)
class ProgramSpec:
    program: Program
    attach: tuple[str, ...]
    mode: str = "skb"
    peers: str = "none"


@dataclass(frozen=True)
class Entry:
    map: str
    key: Toml
    value: Toml


@dataclass(frozen=True)
class LabSpec:
    topology: Topology
    programs: tuple[ProgramSpec, ...] = ()
    entries: tuple[Entry, ...] = ()
    path: Path = field(default=ROOT)

    @property
    def name(self) -> str:
        return self.topology.name


def _fail(path: Path, where: str, reason: str, fix: str) -> TopologyError:
    return TopologyError(f"read lab file {path} ({where})", reason, fix)


_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "a table", bool: "true or false"}


def _typed(path: Path, where: str, key: str, value: Toml, want: type | tuple[type, ...]) -> Toml:
    wants = want if isinstance(want, tuple) else (want,)
    if isinstance(value, bool) and bool not in wants or not isinstance(value, wants):
        got = f"the {type(value).__name__} {value!r}" if not isinstance(value, dict) else "a table"
        raise _fail(path, where, f"key {key!r}: expected {' or '.join(_TYPE_NAMES[w] for w in wants)}, got {got}",
                    f"write {key} as {_TYPE_NAMES[wants[0]]}")
    return value


def _table(path: Path, where: str, raw: Toml, keys: dict[str, Toml] | set[str], required: set[str]) -> dict[str, Toml]:
    if not isinstance(raw, dict):
        raise _fail(path, where, f"expected a table, got {type(raw).__name__} {raw!r}", "see the README's lab files")
    unknown = set(raw) - set(keys)
    if unknown:
        raise _fail(path, where, f"unknown keys {sorted(unknown)}", f"use {sorted(keys)}")
    missing = required - set(raw)
    if missing:
        raise _fail(path, where, f"missing keys {sorted(missing)}", f"add {', '.join(sorted(missing))}")
    if isinstance(keys, dict):
        for k, v in raw.items():
            _typed(path, where, k, v, keys[k])
    return raw


def _end(path: Path, where: str, raw: Toml) -> End:
    return End(**_table(path, where, raw, END_KEYS, {"ns", "name"}))


def _list(path: Path, data: dict[str, Toml], key: str) -> list[Toml]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise _fail(path, key, f"expected a list of tables ([[{key}]]), got {type(value).__name__} {value!r}",
                    f"write each as a [[{key}]] section")
    return value


def load(file: str | Path) -> LabSpec:
    """Read and check a lab file; every error names the file, the place and the fix."""
    path = Path(file)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise TopologyError(f"read lab file {path}", "no such file",
                            "give a path such as topologies/seed.toml") from None
    except IsADirectoryError:
        raise TopologyError(f"read lab file {path}", "it is a directory", "give a .toml file in it") from None
    except (UnicodeDecodeError, OSError) as e:
        raise TopologyError(f"read lab file {path}", str(e), "give a TOML text file") from None
    except tomllib.TOMLDecodeError as e:
        raise TopologyError(f"read lab file {path}", f"not valid TOML: {e}", "fix the syntax") from None
    _table(path, "top level", data, {"name": str, "namespaces": list, "veth": list, "program": list,
                                     "entry": list}, set())
    veths = []
    for i, v in enumerate(_list(path, data, "veth")):
        where = f"[[veth]] {i + 1}"
        _table(path, where, v, {"a": dict, "b": dict}, {"a", "b"})
        veths.append(Veth(_end(path, f"{where} a", v["a"]), _end(path, f"{where} b", v["b"])))
    if not veths:
        raise _fail(path, "veth", "no veth pair", "add at least one [[veth]]")
    namespaces = tuple(_typed(path, "namespaces", "namespaces item", n, str) for n in data.get("namespaces", []))
    topology = Topology(tuple(veths), namespaces, name=data.get("name", path.stem)).validate()
    base = path.resolve().parent
    programs = []
    for i, p in enumerate(_list(path, data, "program")):
        where = f"[[program]] {i + 1}"
        _table(path, where, p, PROGRAM_KEYS, {"program", "attach"})
        attach = (p["attach"],) if isinstance(p["attach"], str) else tuple(p["attach"])
        if len(set(map(str, attach))) != len(attach):
            raise _fail(path, where, f"attach names an interface twice: {list(attach)}",
                        "name each interface once (one program per interface and mode)")
        for key in attach:
            _typed(path, where, "attach item", key, str)
            try:
                topology.end(key)
            except LabError as e:
                raise _fail(path, where, e.reason, e.fix) from None
        mode, peers = p.get("mode", "skb"), p.get("peers")
        if mode not in MODES or (peers is not None and peers not in PEERS):
            raise _fail(path, where, f"mode {mode!r}, peers {peers!r}",
                        f"mode is {' or '.join(MODES)}; peers is {', '.join(PEERS)}")
        peers = peers or default_peer(mode)
        try:
            program = Program.parse(p["program"], base=base)
            if p.get("cflags"):
                program = program.with_flags(*(_typed(path, where, "cflags item", c, str) for c in p["cflags"]))
        except LabError as e:
            raise _fail(path, where, f"{e.action}: {e.reason}", e.fix) from None
        programs.append(ProgramSpec(program, attach, mode, peers))
    entries = []
    for i, entry in enumerate(_list(path, data, "entry")):
        where = f"[[entry]] {i + 1}"
        _table(path, where, entry, ENTRY_KEYS, ENTRY_KEYS)
        _typed(path, where, "map", entry["map"], str)
        entries.append(Entry(entry["map"], entry["key"], entry["value"]))
    if entries and not programs:
        raise _fail(path, "entry", "map entries need a [[program]]", "add a [[program]] section")
    return LabSpec(topology, tuple(programs), tuple(entries), base)
