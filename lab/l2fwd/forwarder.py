"""fast_l2fwd, the seed's forwarder, with typed helpers for its maps: a kit built on the
core's public API (lab.programs, lab.maps, lab.preflight).

    qidconf_map   array 64, u32 -> u32: queues handed to AF_XDP
    l2fwd_map     hash 64, IPv4 destination (as in the IP header) -> struct fwd
    txport_map    devmap 64: egress ifindex -> ifindex
    xsks_map      xskmap 64
    verdict_cnt   per-CPU: one slot per XDP action, plus "malformed"
"""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from ..errors import LabError, MapError, PreflightError
from ..maps import Layout
from ..programs import PACKAGE_BPF, Program, Use, XdpProgram
from ..topology import check_ipv4, check_mac

if TYPE_CHECKING:
    from ..built import Interface, Lab

L2FWD_SOURCE = PACKAGE_BPF / "l2fwd.c"

VERDICTS = ("aborted", "drop", "pass", "tx", "redirect", "malformed")
"""Slots of verdict_cnt: the XDP action numbers, then frames the program could not parse."""

FWD = Layout.c("struct fwd", [("outif", "u32"), ("dst_mac", "u8[6]")])
"""The value of l2fwd_map as bpf/l2fwd.c declares it: 12 bytes, 2 of them tail padding."""

L2FWD = Program(L2FWD_SOURCE, "xdp_l2fwd")
L2FWD_ELF = Program(PACKAGE_BPF / "l2fwd.bpf.o", "xdp_l2fwd", kind="elf")
L2FWD_ELF_DEBUG = Program(PACKAGE_BPF / "l2fwd.debug.bpf.o", "xdp_l2fwd", kind="elf")
KINDS = ("bcc", "elf")


def l2fwd_variant(kind: str, debug: bool = False) -> Program:
    """The l2fwd forwarder as bcc compiles it ("bcc") or as clang built it ("elf")."""
    if kind == "bcc":
        return L2FWD.with_flags("-DL2FWD_DEBUG") if debug else L2FWD
    if kind == "elf":
        return L2FWD_ELF_DEBUG if debug else L2FWD_ELF
    raise LabError(f"choose forwarder variant {kind!r}", "unknown variant", "use bcc or elf")


def _ifindex(outif: object, action: str) -> int:
    """The ifindex of an interface, or an int given as one; anything else is refused."""
    if isinstance(outif, int) and not isinstance(outif, bool):
        return outif
    if hasattr(outif, "ifindex"):
        return int(getattr(outif, "ifindex"))
    raise MapError(action, f"outif {outif!r} is a {type(outif).__name__}",
                   "give an interface (lab.iface('fwd/veth2')) or its ifindex")


class L2fwd(XdpProgram):
    """The fast_l2fwd forwarder with typed helpers for its maps."""

    def __init__(self, program: Program = L2FWD, *, use: Use | None = None) -> None:
        super().__init__(program if program.function else program.named("xdp_l2fwd"), use=use)
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
        index = _ifindex(outif, "encode l2fwd_map value")
        return FWD.pack(outif=index, dst_mac=bytes.fromhex(check_mac(mac, what="encode dst_mac").replace(":", "")))

    def set_l2fwd(self, dst: str, outif: "Interface | int", mac: str) -> None:
        self.map("l2fwd_map").update(self.key(dst), self.value(outif, mac))

    def set_l2fwd_raw(self, dst: str, value: bytes, layout: Layout | None = None) -> None:
        """Write a value as a control plane would, bytes as given (for layout bugs): only its
        size is checked, and `layout` (the control plane's struct) is named if it is wrong."""
        if not isinstance(value, (bytes, bytearray)):
            raise MapError(f"write l2fwd_map[{dst}] raw", f"the value is {type(value).__name__} {value!r}, not bytes",
                           "give the bytes a control plane would write, e.g. FWD.pack(outif=3, dst_mac=...)")
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

    def l2fwd_entries(self) -> dict[str, dict[str, int | str]]:
        out = {}
        m = self.map("l2fwd_map")
        for k, v in m.items():
            if v is not None:
                d = FWD.unpack(v)
                out[str(ipaddress.IPv4Address(k))] = {"outif": d["outif"],
                                                      "dst_mac": ":".join(f"{b:02x}" for b in d["dst_mac"])}
        return out

    # txport_map: ifindex -> ifindex (devmap)
    def set_txport(self, iface: "Interface") -> None:
        """Put `iface` in txport_map (key = value = its ifindex).

        The kernel resolves a devmap's ifindex in the network namespace of the thread that
        writes the entry, so the entry is written from inside the interface's namespace:
        written from the root namespace, ifindex 3 would name the root's device 3."""
        if not hasattr(iface, "ifindex"):
            raise MapError("update txport_map", f"{iface!r} is a {type(iface).__name__}, not an interface",
                           "give the interface: lab.iface('fwd/veth2')")
        index = iface.ifindex
        m = self.map("txport_map")
        if not 0 <= index < m.info.max_entries:
            raise MapError(f"update txport_map[{index}]", f"ifindex {index} of {iface.key} does not fit the "
                           f"devmap (keys 0..{m.info.max_entries - 1})",
                           "raise txport_map's max_entries in bpf/l2fwd.c, or use a devmap_hash")
        m.put(iface, iface)     # written from iface's namespace (MapView.put)

    def route(self, dst: str, via: "Interface", mac: str) -> None:
        """Forward IPv4 `dst` out of `via` with destination MAC `mac` (both maps)."""
        self.set_txport(via)
        self.set_l2fwd(dst, via, mac)

    # preflight
    def problems(self, lab: "Lab", mode: str) -> list[str]:
        """Why frames would vanish with l2fwd's maps as they are: routes whose outif has no
        txport_map entry (the core's preflight checks the devmap targets themselves)."""
        out = []
        targets = {int.from_bytes(v, "little") for _, v in self.map("txport_map").items() if v is not None}
        for dst, entry in self.l2fwd_entries().items():
            if entry["outif"] not in targets:
                out.append(f"l2fwd_map routes {dst} to outif {entry['outif']}, which txport_map does not hold: "
                           f"the redirect fails (XDP_ABORTED); add it with set_txport()")
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


def assert_verdicts(fwd: L2fwd, moved: "dict[str, int] | None" = None, *, since: dict[str, int] | None = None,
                    timeout: float = 2.0, **by_name: int) -> dict[str, int]:
    """Assert that l2fwd's verdict counters moved by exactly what is given (aborted, drop, pass,
    tx, redirect, malformed: as keywords, or in `moved` for "pass", a keyword of Python's)
    since `since` (a fwd.verdicts() taken before; default: since the test's use of the program
    began, its maps empty), and no other verdict moved. Re-read until they match or the lab is
    quiet past `timeout` (frames still in flight); a failure names each verdict that differs
    and every one that moved. Example::

        assert_verdicts(routed, redirect=100)
        assert_verdicts(routed, {"pass": 20, "malformed": 20})
    """
    expected = {**(moved or {}), **by_name}
    unknown = sorted(set(expected) - set(VERDICTS))
    if unknown:
        raise LabError(f"check verdicts {', '.join(unknown)}", "no such verdict", f"use {', '.join(VERDICTS)}")
    base = since or dict.fromkeys(VERDICTS, 0)
    want = {v: expected.get(v, 0) for v in VERDICTS}

    def read() -> dict[str, int]:
        return {v: n - base.get(v, 0) for v, n in fwd.verdicts().items()}
    labs = list({id(a.iface.lab): a.iface.lab for a in fwd.attachments}.values())
    if labs:
        from ..settle import settled_read
        got = settled_read(labs, read, lambda g: g == want, timeout)
    else:
        got = read()
    if got != want:
        wrong = [f"{v}: {got[v]} (expected {want[v]})" for v in VERDICTS if got[v] != want[v]]
        raise AssertionError(f"{fwd.program.source.name} verdicts differ from the expectation:\n  " +
                             "\n  ".join(wrong) + "\nevery verdict that moved: " +
                             (", ".join(f"{v} {n}" for v, n in got.items() if n) or "none"))
    return got
