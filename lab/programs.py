"""XDP programs: loaded by the lab (any bcc C source or clang-built ELF, any function), or
adopted from an interface where another loader attached them; attached in a mode, read
back over netlink, their maps typed from BTF.

    Program       what to load: a path, optionally ":FUNCTION" ("bpf/ring.bpf.o:xdp_ring_0")
    XdpProgram    one test's use of one function of a loaded object: attach(), maps, close()
    Adopted       the program another loader attached to an interface: maps, stats, dumps

An object (a source with its build flags) is loaded once per process with every program in
it, and they all share its maps. Programs of one object used in one test share one `Use`,
which empties the maps when the test starts and ends; an object with maps can have one
`Use` at a time in a process (two would empty each other's maps), an object without maps
any number. Maps an ELF asks to pin are pinned under /sys/fs/bpf/xdplab/<owner>/, removed
when the object is closed (`close_objects()`, at the end of a session) or, after a crash,
by the sweep.
"""
from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self

from . import BPF_DIR, bpfsys, sweep, xdp
from .btf import Btf, map_layouts
from .errors import CompileError, LabError, MapError, XdpError
from .maps import MapView

if TYPE_CHECKING:
    from .bccload import BccObject
    from .built import Interface
    from .elf import ElfObject

PACKAGE_BPF = BPF_DIR        # the lab's own programs (lab.BPF_DIR: a checkout's bpf/, or the package data)


@dataclass(frozen=True)
class Program:
    """What to load: a bcc C source (kind "bcc") or a clang-built ELF object (kind "elf",
    from a .o file), the function (None: the object's only XDP program) and bcc flags."""
    source: Path
    function: str | None = None
    cflags: tuple[str, ...] = ()
    kind: str = "bcc"
    instance: str = ""
    """Another copy of the object, with maps of its own (one per hop, as one loader per
    interface would load it): `program.copy("hop2")`."""

    def __post_init__(self) -> None:
        if Path(self.source).suffix == ".o" and self.kind == "bcc":     # Program(Path("x.bpf.o")) is an ELF object
            object.__setattr__(self, "kind", "elf")

    @classmethod
    def parse(cls, spec: str | Path, function: str | None = None, base: Path | None = None) -> "Program":
        """`PATH[:FUNCTION]`. A relative PATH is taken from `base` (the test file's or lab
        file's folder), or from the working directory when nothing is there or no base is
        given: the one rule for every place that names a program."""
        if not isinstance(spec, (str, Path)) or not str(spec):
            raise CompileError(f"load program {spec!r}", "not a path", 'give "PATH" or "PATH:FUNCTION"')
        text = str(spec)
        path, sep, fn = text.rpartition(":") if ":" in text else (text, "", "")
        if sep and not fn:
            raise CompileError(f"load program {text}", "nothing after ':'", 'write "PATH:FUNCTION" or just "PATH"')
        if function is not None and sep and function != fn:
            raise CompileError(f"load program {text}", f"two functions named: {fn} and {function}",
                               "name the function once")
        source = Path(path)
        if base is not None and not source.is_absolute() and ((base / source).exists() or not source.exists()):
            source = base / source          # (missing everywhere: named where it was looked for first)
        source = source.resolve()
        if source.is_dir():
            raise CompileError(f"load program {text}", f"{source} is a directory",
                               "give a bcc C source (.c) or a clang-built ELF object (.o)")
        if not source.exists():
            raise CompileError(f"load program {text}", f"{source} does not exist",
                               "give the path of a bcc C source (.c) or a clang-built ELF object (.o; `make bpf`)")
        if not source.is_file() or source.suffix not in (".c", ".o"):
            raise CompileError(f"load program {text}", f"{source} is not a .c source or a .o object file",
                               "give the path of a bcc C source (.c) or a clang-built ELF object (.o; `make bpf`)")
        return cls(source, fn or function, (), "elf" if source.suffix == ".o" else "bcc")

    def with_flags(self, *cflags: str) -> "Program":
        if self.kind != "bcc":
            raise CompileError(f"add build flags to {self.source.name}", "an ELF object is already built",
                               "build the object with the flags (make bpf builds the debug variant too)")
        return replace(self, cflags=self.cflags + tuple(cflags))

    def named(self, function: str) -> "Program":
        """The same object, another of its functions."""
        return replace(self, function=function)

    def copy(self, instance: str) -> "Program":
        """The same program as a separate object with its own maps."""
        return replace(self, instance=instance)

    @property
    def object_key(self) -> tuple[Path, tuple[str, ...], str]:
        return self.source, self.cflags, self.instance

    def __str__(self) -> str:
        return f"{self.source.name}:{self.function}" if self.function else self.source.name


class LoadedObject(Protocol):
    programs: dict[str, int]
    sections: dict[str, str]
    maps: dict[str, MapView]

    def close(self) -> None: ...


_objects: dict[tuple[Path, tuple[str, ...], str], "BccObject | ElfObject"] = {}
_seq = [0]


def loaded(program: Program) -> "BccObject | ElfObject":
    """The object of `program`, loaded on first use in this process."""
    key = program.object_key
    if key not in _objects:
        if program.kind == "elf":
            from .elf import ElfObject
            _seq[0] += 1
            pins = os.path.join(sweep.pin_dir(), f"{_seq[0]}-" + program.source.name.replace(".", "_"))
            _objects[key] = ElfObject(program.source, pins)
        else:
            from .bccload import BccObject
            _objects[key] = BccObject(program.source, program.cflags)
    return _objects[key]


def close_objects(unpin: bool = True) -> None:
    """Close every object this process loaded (their maps go unless attached programs hold
    them; with `unpin`, their pins are removed). Called at the end of a pytest session and
    of each command that loaded something (`lab up` keeps the pins, for `lab down`)."""
    errors = []
    while _objects:
        _, obj = _objects.popitem()
        try:
            obj.close() if unpin or not hasattr(obj, "release") else obj.release()
        except OSError as e:
            errors.append(str(e))
    with contextlib.suppress(OSError):
        os.rmdir(sweep.pin_dir())
    if errors:
        raise LabError("close loaded BPF objects", "; ".join(errors), "run `python -m lab clean`")


def function_of(program: Program, obj: "BccObject | ElfObject") -> str:
    """The function to use: the one named, else the object's only XDP program."""
    from .bccload import BccObject
    names = obj.functions if isinstance(obj, BccObject) else list(obj.programs)
    if program.function is None:
        xdps = [n for n in names if obj.sections.get(n, "").startswith("xdp")]
        if len(xdps) == 1:
            return xdps[0]
        raise CompileError(f"choose a program in {program.source.name}",
                           f"it has {len(xdps)} XDP programs ({', '.join(xdps) or 'none'})" if xdps or names
                           else "it has no program", f'name one: "{program.source.name}:FUNCTION"')
    if program.function not in names:
        raise CompileError(f"find program {program.function} in {program.source.name}", "no such function",
                           f"use one of {', '.join(names) or '(none)'}")
    return program.function


def program_fd(program: Program) -> tuple[int, str]:
    """Load (once) and return the fd and function name of `program`, checked to be XDP."""
    from .bccload import BccObject
    obj = loaded(program)
    function = function_of(program, obj)
    fd = obj.load(function) if isinstance(obj, BccObject) else obj.programs[function]
    info = bpfsys.prog_info(fd)
    if info.type != "xdp":
        raise CompileError(f"use {program.source.name}:{function} as an XDP program",
                           f"not an XDP program: section {obj.sections.get(function)!r}, type {info.type}",
                           'give a SEC("xdp") function')
    return fd, function


class _Closable(Protocol):
    def close(self) -> None: ...


def close_each(items: "list[_Closable] | list[XdpProgram] | list[xdp.Attachment]") -> list[LabError]:
    """Close and remove every item, last first, going on after failures; the failures."""
    errors: list[LabError] = []
    while items:
        try:
            items.pop().close()
        except LabError as e:
            errors.append(e)
    return errors


class Use:
    """One test's use of a loaded object: its maps are emptied at the start and at the end."""

    _in_use: set[tuple[Path, tuple[str, ...], str]] = set()

    def __init__(self, program: Program) -> None:
        self.object = loaded(program)
        self.key = program.object_key
        self.name = program.source.name
        if self.object.maps:
            if self.key in Use._in_use:
                raise LabError(f"use {self.name}", "another user in this process holds it and would share "
                               "its maps", "close the other XdpProgram first, or ask the same test's "
                               "xdp_program fixture (one use per object per test)")
            Use._in_use.add(self.key)
        self.programs: list["XdpProgram"] = []
        self.clear_maps()

    def clear_maps(self) -> None:
        for m in self.object.maps.values():
            m.clear()
            m.home = None

    def close(self) -> None:
        errors = close_each(self.programs)
        if self.key in Use._in_use:
            self.clear_maps()
            Use._in_use.discard(self.key)
        if errors:
            raise errors[0]


GENERIC_REFUSES = "this kernel's generic XDP refuses"     # the start of _why_refused's reason


class XdpProgram:
    """One function of a loaded object, in one test: attach it anywhere, read its maps.

    `close()` detaches it, last attached first; the `Use` it belongs to empties the
    object's maps once no program of the object is in use."""

    def __init__(self, program: Program | str, function: str | None = None, *, use: Use | None = None) -> None:
        if not isinstance(program, Program):
            program = Program.parse(program, function)
        elif function is not None:
            program = program.named(function)
        self.fd, self.function = program_fd(program)
        self.program = program.named(self.function)
        self.info = bpfsys.prog_info(self.fd)
        self._own_use = use is None
        self.use = use or Use(program)
        self.use.programs.append(self)
        self.attachments: list[xdp.Attachment] = []

    @property
    def name(self) -> str:
        return f"{self.program.source.name}:{self.function}"

    def sibling(self, function: str) -> "XdpProgram":
        """Another function of the same object, sharing its maps (closed with this use)."""
        return XdpProgram(self.program.named(function), use=self.use)

    # attach ------------------------------------------------------------------------------
    def attach(self, iface: "Interface", mode: str) -> xdp.Attachment:
        xdp.park(self.fd, self.info.id)     # loaded for the whole process anyway (xdp.Parking)
        try:
            a = xdp.Attachment(iface, self.fd, mode, self.info.name)
        except XdpError as e:
            raise self._why_refused(e, iface, mode) from None
        self.attachments.append(a)
        mine = set(self.info.map_ids)
        for m in self.maps.values():
            if m.home is None and m.info.id in mine:
                m.home = iface
        iface.lab.register(self)
        return a

    def placements(self) -> list[tuple["Interface", str, int]]:
        return [(a.iface, a.mode, a.prog_id) for a in self.attachments if a.attached]

    def _why_refused(self, e: XdpError, iface: "Interface", mode: str) -> XdpError:
        """The kernel's EINVAL without a message, explained where a probe knows why: generic
        XDP from 5.8 to 5.14 refuses programs using a devmap or cpumap whose entries can carry
        a program (lab.features.generic_refuses_map_programs)."""
        from .features import generic_refuses_map_programs
        if mode != "skb" or e.errno != errno.EINVAL or not generic_refuses_map_programs():
            return e
        mine = set(self.info.map_ids)
        blocking = [m for m in self.maps.values() if m.info.id in mine and m.info.value_size > 4
                    and m.info.type in ("devmap", "devmap_hash", "cpumap")]
        if not blocking:
            return e
        from .features import generic_cpumap
        names = ", ".join(f"{m.name} (a {m.info.type} with {m.info.value_size}-byte values)" for m in blocking)
        if any(m.info.type == "cpumap" for m in blocking) and not generic_cpumap():
            fix = ("attach in drv mode: before 5.15 generic XDP cannot redirect into a cpumap at all, whatever its "
                   "values (EBADRQC; no cpu_map_generic_redirect in this kernel)")
        else:
            fix = "give the map 4-byte values (the ifindex, or the queue size, alone), or attach in drv mode"
        return XdpError(f"attach xdp program {self.name} to {iface.key} in skb mode",
                        f"{GENERIC_REFUSES} a program using {names}: entries that can carry a "
                        "program of their own (EINVAL; Linux 5.8 to 5.14)", fix, errno=errno.EINVAL, objects=(iface,))

    def close(self) -> None:
        errors = close_each(self.attachments)
        if self._own_use:
            self._own_use = False
            try:
                self.use.close()
            except LabError as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # maps and stats ----------------------------------------------------------------------
    @property
    def maps(self) -> dict[str, MapView]:
        return self.use.object.maps

    def map(self, name: str) -> MapView:
        return map_named(self.maps, name, self.name)

    def clear_maps(self) -> None:
        self.use.clear_maps()

    def dump(self) -> str:
        return "\n\n".join(m.dump() for m in self.maps.values()) or "(no maps)"

    def run_stats(self) -> tuple[int, int]:
        """(run count, run time in ns) of this program, as the kernel counts them while the
        lab holds BPF_ENABLE_STATS."""
        info = bpfsys.prog_info(self.fd)
        return info.run_cnt, info.run_time_ns

    def __repr__(self) -> str:
        return f"XdpProgram({self.name}, id {self.info.id})"


def map_named(maps: dict[str, MapView], name: str, owner: str) -> MapView:
    try:
        return maps[name]
    except KeyError:
        raise MapError(f"find map {name}", f"{owner} has no such map",
                       f"use one of {', '.join(maps) or '(it has none)'}") from None


def open_maps(map_ids: tuple[int, ...] | list[int], btf: Btf | None = None) -> dict[str, MapView]:
    """Views of maps by kernel id, typed from their BTF (close with close_maps)."""
    from .elf import raw_layouts
    out: dict[str, MapView] = {}
    for map_id in map_ids:
        try:
            fd = bpfsys.map_fd_by_id(map_id)
        except OSError as e:
            close_maps(out)
            raise MapError(f"open map id {map_id}", e.strerror or str(e), "is the program still loaded?") from None
        info = bpfsys.map_info(fd)
        if "." in info.name:                 # .rodata/.bss/.data: the program's constants
            os.close(fd)
            continue
        out[info.name] = MapView(fd, *(map_layouts(info, btf) or raw_layouts(info)))
    return out


def close_maps(maps: dict[str, MapView]) -> None:
    for m in maps.values():
        with contextlib.suppress(OSError):
            os.close(m.fd)


class Adopted:
    """The XDP program another loader (your control plane) attached to an interface: found
    through netlink, opened by id, its maps typed from BTF. Closing it lets go of the lab's
    handles only: detaching is its owner's business (the lab's namespaces take it with them)."""

    def __init__(self, iface: "Interface") -> None:
        state = xdp.query(iface)
        if state.mode is None:
            raise LabError(f"adopt the XDP program on {iface.key}", "no XDP program is attached there",
                           "run your loader first (lab.run(ns, [...])) and check that it attached")
        self.iface, self.mode, self.prog_id = iface, state.mode, state.prog_id
        try:
            self.fd = bpfsys.prog_fd_by_id(state.prog_id)
        except OSError as e:
            raise LabError(f"adopt program id {state.prog_id} on {iface.key}", e.strerror or str(e),
                           "was it detached meanwhile?") from None
        self.info = bpfsys.prog_info(self.fd)
        btf = Btf.by_id(self.info.btf_id) if self.info.btf_id else None
        self.maps = open_maps(self.info.map_ids, btf)
        for m in self.maps.values():
            m.home = iface
        self.attachments: list[xdp.Attachment] = []

    @property
    def name(self) -> str:
        return f"{self.info.name} (adopted from {self.iface.key})"

    def map(self, name: str) -> MapView:
        return map_named(self.maps, name, self.name)

    def placements(self) -> list[tuple["Interface", str, int]]:
        return [(self.iface, self.mode, self.prog_id)]

    def dump(self) -> str:
        return "\n\n".join(m.dump() for m in self.maps.values()) or "(no maps)"

    def run_stats(self) -> tuple[int, int]:
        info = bpfsys.prog_info(self.fd)
        return info.run_cnt, info.run_time_ns

    def close(self) -> None:
        if self.fd >= 0:
            close_maps(self.maps)
            os.close(self.fd)
            self.fd = -1
