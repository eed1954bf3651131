"""Compile XDP C sources with bcc (once per process and variant), attach them, own their maps.

A `Program` is compiled at most once per process for each (source, cflags): the loaded
program and its maps are reused by every test of the process, and each `Forwarder` (one
per test) empties the maps when it starts and when it is closed. Attachments are
detached in reverse order on close.
"""
from __future__ import annotations

import ipaddress
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import bpfsys, environment
from .errors import CompileError, LabError, MapError, PreflightError
from .btf import Btf, map_layouts
from .maps import Layout, MapView
from .topology import check_ipv4, check_mac
from .xdp import Attachment

if TYPE_CHECKING:
    from .topology import Interface, Lab

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
L2FWD_SOURCE = BPF_DIR / "l2fwd.c"
PASS_SOURCE = BPF_DIR / "xdp_pass.c"

VERDICTS = ("aborted", "drop", "pass", "tx", "redirect", "malformed")
"""Slots of verdict_cnt: the XDP action numbers, then frames the program could not parse."""

FWD = Layout.c("struct fwd", [("outif", "u32"), ("dst_mac", "u8[6]")])
"""The value of l2fwd_map as bpf/l2fwd.c declares it: 12 bytes, 2 of them tail padding."""


@dataclass(frozen=True)
class Program:
    """An XDP program: a bcc C source (kind "bcc") or a clang-built ELF object (kind "elf",
    loaded with libbpf), the function to load, and bcc build flags."""
    source: Path
    function: str
    cflags: tuple[str, ...] = ()
    kind: str = "bcc"

    def with_flags(self, *cflags: str) -> "Program":
        if self.kind != "bcc":
            raise LabError(f"add build flags to {self.source.name}", "an ELF object is already built",
                           "build the object with the flags (make bpf builds the debug variant too)")
        return Program(self.source, self.function, self.cflags + tuple(cflags), self.kind)


L2FWD = Program(L2FWD_SOURCE, "xdp_l2fwd")
L2FWD_ELF = Program(BPF_DIR / "l2fwd.bpf.o", "xdp_l2fwd", kind="elf")
L2FWD_ELF_DEBUG = Program(BPF_DIR / "l2fwd.debug.bpf.o", "xdp_l2fwd", kind="elf")


def l2fwd_variant(kind: str, debug: bool = False) -> Program:
    """The l2fwd forwarder as bcc compiles it ("bcc") or as clang built it ("elf")."""
    if kind == "bcc":
        return L2FWD.with_flags("-DL2FWD_DEBUG") if debug else L2FWD
    if kind == "elf":
        return L2FWD_ELF_DEBUG if debug else L2FWD_ELF
    raise LabError(f"choose forwarder variant {kind!r}", "unknown variant", "use bcc or elf")
XDP_PASS = Program(PASS_SOURCE, "xdp_pass")
XDP_DROP = Program(BPF_DIR / "xdp_drop.c", "xdp_drop")
XDP_GEN = Program(BPF_DIR / "xdp_gen.c", "xdp_gen")


class Compiled:
    """A program compiled and loaded by bcc: its fd and its maps, typed from BTF."""

    def __init__(self, program: Program) -> None:
        environment.require(bcc=True)
        import bcc  # Debian's python3-bpfcc
        self.program = program
        src = program.source.read_bytes()
        stderr = _CapturedStderr()
        failure: Exception | None = None
        with stderr:
            try:
                self.bpf = bcc.BPF(text=src, cflags=list(program.cflags))
                fn = self.bpf.load_func(program.function.encode(), bcc.BPF.XDP)
            except Exception as e:  # bcc raises bare Exception with the diagnostics on stderr
                failure = e
        if failure is not None:
            log = stderr.text.strip()
            if "Failed to load BPF program" in str(failure):
                raise CompileError(f"load {program.function} from {program.source.name}",
                                   f"the verifier refused it:\n{log}",
                                   "fix the program: the verifier's log above ends at the refused instruction")
            raise CompileError(f"compile {program.source.name} with bcc", f"{failure}:\n{log}",
                               "fix the C source (diagnostics above)") from None
        self.fd: int = fn.fd
        self.info = bpfsys.prog_info(self.fd)
        self.clean = False      # True while its maps are known to be empty
        self.maps: dict[str, MapView] = {}
        btf = Btf.by_id(self.info.btf_id) if self.info.btf_id else None
        for name in self._table_names():
            t = self.bpf.get_table(name.encode())
            info = bpfsys.map_info(t.map_fd)
            # the program's BTF where the map has it (bcc gives none to devmap/xskmap), else bcc's ctypes
            key, value = map_layouts(info, btf) or (Layout.from_ctypes(f"{name} key", t.Key),
                                                    Layout.from_ctypes(f"{name} value", t.Leaf))
            self.maps[name] = MapView(t.map_fd, key, value)

    def _table_names(self) -> list[str]:
        import ctypes

        import bcc
        lib = bcc.lib  # bcc's Python binding does not declare these two
        lib.bpf_num_tables.restype, lib.bpf_num_tables.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
        lib.bpf_table_name.restype = ctypes.c_char_p
        lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        return [lib.bpf_table_name(self.bpf.module, i).decode() for i in range(lib.bpf_num_tables(self.bpf.module))]


class _CapturedStderr:
    """Capture what bcc/clang print on fd 2 while compiling (the compiler's diagnostics)."""

    def __enter__(self) -> "_CapturedStderr":
        sys.stderr.flush()
        self._tmp = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._tmp.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._tmp.seek(0)
        self.text = self._tmp.read().decode(errors="replace")
        self._tmp.close()


_cache: dict[Program, Any] = {}
_in_use: set[Program] = set()
compile_count = 0
"""How many bcc compiles this process ran (the benchmark and tests read it)."""


def compiled(program: Program) -> Any:
    """The loaded program (Compiled by bcc, or an ELF object loaded by libbpf), loaded on
    first use in this process."""
    global compile_count
    if program not in _cache:
        if program.kind == "elf":
            from .elf import ElfProgram
            _cache[program] = ElfProgram(program)
        else:
            compile_count += 1
            _cache[program] = Compiled(program)
    return _cache[program]


class Forwarder:
    """One test's use of a compiled program: its attachments and the state of its maps.

    The maps are emptied on creation and on close(); close() also detaches, last first."""

    def __init__(self, program: Program = L2FWD) -> None:
        if program in _in_use:
            raise LabError(f"use program {program.source.name}", "another Forwarder of this process uses it: "
                           "they would share its maps", "close the other Forwarder first, or compile a "
                           "variant (Program.with_flags) for the second one")
        self.compiled = compiled(program)
        self.program = program
        self.attachments: list[Attachment] = []
        if not self.compiled.clean:       # a previous user that did not close, or the first one
            self.clear_maps()
        self.compiled.clean = False
        _in_use.add(program)

    # attach ------------------------------------------------------------------------------
    def attach(self, iface: "Interface", mode: str) -> Attachment:
        a = Attachment(iface, self.compiled.fd, mode, self.compiled.info.name)
        self.attachments.append(a)
        return a

    def close(self) -> None:
        errors = []
        while self.attachments:
            try:
                self.attachments.pop().close()
            except LabError as e:
                errors.append(e)
        self.clear_maps()
        _in_use.discard(self.program)
        if errors:
            raise errors[0]

    def __enter__(self) -> "Forwarder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # maps --------------------------------------------------------------------------------
    @property
    def maps(self) -> dict[str, MapView]:
        return self.compiled.maps

    def map(self, name: str) -> MapView:
        try:
            return self.maps[name]
        except KeyError:
            raise MapError(f"find map {name}", f"{self.program.source.name} has no such map",
                           f"use one of {', '.join(self.maps)}") from None

    def clear_maps(self) -> None:
        for m in self.maps.values():
            m.clear()
        self.compiled.clean = True

    def dump(self) -> str:
        return "\n\n".join(m.dump() for m in self.maps.values())


class L2fwd(Forwarder):
    """The fast_l2fwd forwarder with typed helpers for its maps."""

    def __init__(self, program: Program = L2FWD) -> None:
        super().__init__(program)
        try:
            m = self.map("l2fwd_map")
            m.value_layout.check(FWD, f"l2fwd_map value of {program.source.name}")
        except LabError:
            self.close()
            raise
        m.key_format = lambda raw: str(ipaddress.IPv4Address(raw))
        self.trace_tag: int | None = None     # set by set_trace_tag() in debug builds

    # l2fwd_map: daddr (as in the IP header) -> {outif, dst_mac}
    @staticmethod
    def key(dst: str) -> bytes:
        """The l2fwd_map key of an IPv4 destination: the 4 bytes as they sit in the IP header."""
        return ipaddress.IPv4Address(check_ipv4(dst, what="encode l2fwd_map key")).packed

    @staticmethod
    def value(outif: "Interface | int", mac: str) -> bytes:
        index = outif if isinstance(outif, int) else outif.ifindex
        return FWD.pack(outif=index, dst_mac=bytes.fromhex(check_mac(mac, what="encode dst_mac").replace(":", "")))

    def set_l2fwd(self, dst: str, outif: "Interface | int", mac: str) -> None:
        self.map("l2fwd_map").update(self.key(dst), self.value(outif, mac))

    def set_l2fwd_raw(self, dst: str, value: bytes, layout: Layout | None = None) -> None:
        """Write a value as a control plane would, bytes as given (for layout bugs): only its
        size is checked, and `layout` (the control plane's struct) is named if it is wrong."""
        self.map("l2fwd_map").update(self.key(dst), value, value_layout=layout)

    def check_layout(self, layout: Layout) -> None:
        """Check a control plane's struct against l2fwd_map's value type from BTF: size and
        every field's offset; the error names the fields that differ."""
        self.map("l2fwd_map").value_layout.check(layout, "l2fwd_map value")

    def set_trace_tag(self, tag: int) -> bool:
        """Make the program's bpf_printk lines carry `tag` (debug builds only; False otherwise)."""
        if "trace_tag" not in self.maps:
            return False
        self.map("trace_tag").update(bytes(4), (tag & 0xFFFFFFFF).to_bytes(4, "little"))
        self.trace_tag = tag
        return True

    def l2fwd_entries(self) -> dict[str, dict[str, Any]]:
        out = {}
        m = self.map("l2fwd_map")
        for k, v in m.items():
            if v is not None:
                d = FWD.unpack(v)
                out[str(ipaddress.IPv4Address(k))] = {"outif": d["outif"], "dst_mac": ":".join(f"{b:02x}" for b in d["dst_mac"])}
        return out

    # txport_map: ifindex -> ifindex (devmap)
    def set_txport(self, iface: "Interface") -> None:
        """Put `iface` in txport_map (key = value = its ifindex).

        The kernel resolves a devmap's ifindex in the network namespace of the thread that
        writes the entry, so the entry is written from inside the interface's namespace:
        written from the root namespace, ifindex 3 would name the root's device 3."""
        index = iface.ifindex
        m = self.map("txport_map")
        if not 0 <= index < m.info.max_entries:
            raise MapError(f"update txport_map[{index}]", f"ifindex {index} of {iface.key} does not fit the "
                           f"devmap (keys 0..{m.info.max_entries - 1})",
                           "raise txport_map's max_entries in bpf/l2fwd.c, or use a devmap_hash")
        raw = index.to_bytes(4, "little")
        with iface.ns.entered():
            m.update(raw, raw)

    def route(self, dst: str, via: "Interface", mac: str) -> None:
        """Forward IPv4 `dst` out of `via` with destination MAC `mac` (both maps)."""
        self.set_txport(via)
        self.set_l2fwd(dst, via, mac)

    # preflight
    def problems(self, lab: "Lab", mode: str) -> list[str]:
        """Why frames would vanish with the maps as they are: routes whose outif has no
        txport_map entry, and redirect targets that cannot receive in `mode`."""
        from .features import redirect_readiness
        out = []
        home = self.attachments[0].iface if self.attachments else None
        tx = self.map("txport_map")
        targets = {int.from_bytes(v, "little") for _, v in tx.items() if v is not None}
        for dst, entry in self.l2fwd_entries().items():
            if entry["outif"] not in targets:
                out.append(f"l2fwd_map routes {dst} to outif {entry['outif']}, which txport_map does not hold: "
                           f"the redirect fails (XDP_ABORTED); add it with set_txport()")
        for index in sorted(targets):
            iface = next((i for i in lab.interfaces.values()
                          if home is not None and i.ns is home.ns and i.ifindex == index), None)
            if iface is None:
                out.append(f"txport_map holds ifindex {index}, which is no interface of "
                           f"{home.nsname if home else 'the forwarder'}'s namespace")
                continue
            r = redirect_readiness(lab, iface, mode)
            if not r.ready:
                peer = lab.peer(iface.key)
                out.append(f"{r}: attach an XDP program to {peer.key} (xdp_pass), turn GRO on there "
                           f"(ethtool -K {peer.name} gro on), or attach in skb mode")
        return out

    def preflight(self, lab: "Lab", mode: str) -> None:
        """Raise PreflightError when frames sent now would vanish (see problems())."""
        problems = self.problems(lab, mode)
        if problems:
            raise PreflightError(f"preflight {self.program.source.name} in {mode} mode",
                                 "frames would vanish: " + "; ".join(problems),
                                 "fix the setup, or mark the test @pytest.mark.expect_drops if the drop is "
                                 "what it tests")

    # verdict_cnt
    def verdicts(self) -> dict[str, int]:
        """Frames the program returned each action for (summed over CPUs), plus malformed."""
        m = self.map("verdict_cnt")
        return {name: int.from_bytes(m.sum_percpu(slot.to_bytes(4, "little")) or bytes(8), "little")
                for slot, name in enumerate(VERDICTS)}
