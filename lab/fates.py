"""Fates: what the kernel did with the frames on a lab's interfaces, in the kernel's own words.

The kernel reports what happens to frames through tracepoints: `xdp:xdp_exception` (a
program returned XDP_ABORTED or an unknown action, or XDP_TX failed), `xdp:xdp_redirect`
and `xdp_redirect_err` (program, from and to device, errno, map and index),
`xdp:xdp_devmap_xmit` and `xdp_bulk_tx` (frames sent and dropped at a transmit, errno) and
`skb:kfree_skb` (a socket buffer freed as a drop: the reason, and the kernel function that
dropped it). bpf/fates.bpf.c hooks each of them with a BTF-typed raw tracepoint program
and keeps only events whose device is one of the watched ones, named by (network
namespace inode, ifindex): a process watches only the devices of its own labs, so two
sessions, xdist workers and other software never see each other's events, and no tracefs
switch that another reader depends on is touched.

One `Recorder` per process (loaded on first use, closed by `close()` at the end of a
session). A lab asks for its fates with `Lab.fates()`: a `Fates` holds, since the lab was
built, every event counted by kind, place and detail (exact: counted in the kernel, "N
events lost" if the kernel's table was ever full), and every skb the kernel dropped on the
lab's devices with its first 128 bytes, matched to the lab's own sends (`Send`) by its bytes
after the two MAC addresses. `after - before` is what happened in between;
`assert_fates(before, expected)` checks it the way `assert_counters` checks counters.
"""
from __future__ import annotations

import bisect
import ctypes
import errno as _errno
import os
import struct
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import BPF_DIR, bpfsys
from .btf import FUNC_PROTO, TYPEDEF, enum_members, type_words
from .errors import LabError
from .once import OnePerProcess

if TYPE_CHECKING:
    from .built import Interface, Lab

OBJECT = BPF_DIR / "fates.bpf.o"
RING_BYTES = 1 << 22
FRAME_BYTES = 128

# kind number in bpf/fates.bpf.c -> tracepoint, program
EVENTS = {1: ("xdp_exception", "fate_xdp_exception"), 2: ("xdp_redirect", "fate_xdp_redirect"),
          3: ("xdp_redirect_err", "fate_xdp_redirect_err"), 4: ("xdp_devmap_xmit", "fate_xdp_devmap_xmit"),
          5: ("xdp_bulk_tx", "fate_xdp_bulk_tx"), 6: ("kfree_skb", "fate_kfree_skb"),
          7: ("xdp_cpumap_enqueue", "fate_xdp_cpumap_enqueue"), 8: ("xdp_cpumap_kthread", "fate_xdp_cpumap_kthread")}
# arguments each tracepoint must have (after the context) for the program to read them
ARGS = {"xdp_exception": 3, "xdp_redirect": 7, "xdp_redirect_err": 7, "xdp_devmap_xmit": 5, "xdp_bulk_tx": 4,
        "xdp_cpumap_enqueue": 4, "xdp_cpumap_kthread": 5}
# older forms the lab also reads: (arguments, program). Before 5.13 (e.g. 5.10) a redirect's
# tracepoint passes the map itself, not its type and id; before 5.17 kfree_skb has no reason.
OLDER = {"xdp_redirect": (6, "fate_xdp_redirect_map_ptr"), "xdp_redirect_err": (6, "fate_xdp_redirect_err_map_ptr"),
         "kfree_skb": (2, "fate_kfree_skb_noreason")}
CPUMAP = "cpumap"      # MapInfo.type of a cpumap (bpfsys names map types)
CPUMAP_PROGRAM = {1: "XDP_PASS", 2: "XDP_DROP", 3: "XDP_REDIRECT"}   # xdp_cpumap_kthread's program stats
XDP_ACTIONS = ("XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT")
NOT_REPORTED = "not reported by this kernel"
NO_REASON = f"reason {NOT_REPORTED} (before 5.17)"      # kfree_skb's reason, on older kernels
REASON = "kfree_skb reason"                                # its key in Kernel.missing
RING_LOST = "skb drops' bytes"
_RANK = {"xdp_redirect": 0, "xdp_redirect_err": 1, "xdp_exception": 2, "xdp_devmap_xmit": 3, "xdp_bulk_tx": 4,
         "xdp_cpumap_enqueue": 5, "xdp_cpumap_kthread": 6, "kfree_skb": 7,
         "af_packet": 8}                # the order a frame meets them

_KEY = struct.Struct("<IIIIiIIIIIQ")       # struct fate_key
_VAL = struct.Struct("<QQQ")               # struct fate_val
_FRAME = struct.Struct("<QQIIIIII")        # struct frame_event, before its bytes
_DEV = struct.Struct("<II")


class FatesError(LabError):
    """The kernel's frame events cannot be recorded here (no BTF, no tracepoint, no permission)."""


@dataclass(frozen=True)
class FrameEvent:
    """One skb the kernel dropped on a watched device, with the start of its bytes."""
    netns: int
    ifindex: int
    reason: int
    location: int
    time: int                   # ns, CLOCK_MONOTONIC
    length: int
    data: bytes


_RingCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class KernelEvents:
    """What this kernel can report: which tracepoints it has (with the arguments the lab
    reads), and the names of its skb drop reasons, from /sys/kernel/btf/vmlinux."""

    def __init__(self) -> None:
        from .btf import vmlinux
        from .elf import libbpf
        lib = libbpf()
        try:
            with vmlinux() as btf:
                self._read(lib, btf)
        except OSError as e:
            raise FatesError("read the kernel's BTF", os.strerror(e.errno or _errno.ENOENT),
                             "the kernel needs CONFIG_DEBUG_INFO_BTF=y (/sys/kernel/btf/vmlinux)") from None

    def _read(self, lib: ctypes.CDLL, btf: int) -> None:
        self.missing: dict[str, str] = {}
        self.program: dict[str, str] = {}          # tracepoint -> the program that reads this kernel's form
        for name, prog in EVENTS.values():
            n = self._arg_count(lib, btf, name)
            if n is None:
                self.missing[name] = f"{NOT_REPORTED}: it has no tracepoint {name}"
            elif name in OLDER and n == OLDER[name][0]:
                self.program[name] = OLDER[name][1]
            elif n < ARGS.get(name, 3):
                self.missing[name] = (f"{NOT_REPORTED} in the form the lab reads ({n} arguments, "
                                      f"not {ARGS.get(name, 3)})")
            else:
                self.program[name] = prog
        self.reason_arg = self.program.get("kfree_skb") == "fate_kfree_skb"
        if not self.reason_arg:
            self.missing[REASON] = f"{NOT_REPORTED}: its kfree_skb tracepoint has no reason argument (5.17+)"
        members = enum_members(lib, btf, "skb_drop_reason") or {}
        self.reasons: dict[int, str] = {v: k.removeprefix("SKB_DROP_REASON_") for k, v in members.items()}

    @staticmethod
    def _arg_count(lib: ctypes.CDLL, btf: int, tracepoint: str) -> int | None:
        """The arguments of a tracepoint (without the context), from btf_trace_<name>."""
        tid = lib.btf__find_by_name_kind(btf, f"btf_trace_{tracepoint}".encode(), TYPEDEF)
        if tid <= 0:
            return None
        for _ in range(2):          # typedef -> pointer -> function prototype
            tid = type_words(lib.btf__type_by_id(btf, tid), 3)[2]
        info = type_words(lib.btf__type_by_id(btf, tid), 3)[1]
        return (info & 0xFFFF) - 1 if (info >> 24) & 0x1F == FUNC_PROTO else None

    def reason(self, code: int) -> str:
        if not self.reason_arg:
            return NO_REASON
        return self.reasons.get(code, f"reason {code}")


class Recorder:
    """bpf/fates.bpf.o loaded and attached: the watched devices, the counted events, and
    the ring buffer of dropped skbs. One per process; `close()` detaches everything."""

    def __init__(self, path: Path = OBJECT, ring_bytes: int = RING_BYTES) -> None:
        from .elf import libbpf, open_object, strerror
        self.kernel = KernelEvents()
        lib = self._lib = libbpf()
        self._links: dict[str, int] = {}
        self._paths = 0                     # labs that follow every redirect
        self._ring: int | None = None
        obj, log = open_object(path, FatesError)
        self._obj: int | None = obj
        try:
            chosen = {tp: prog for tp, prog in self.kernel.program.items()
                      if lib.bpf_object__find_program_by_name(obj, prog.encode())}
            for tp, prog in self.kernel.program.items():
                if tp not in chosen:
                    self.kernel.missing.setdefault(tp, f"not recorded: {path.name} has no {prog}")
            for prog in {p for _, p in EVENTS.values()} | {p for _, p in OLDER.values()}:
                handle = lib.bpf_object__find_program_by_name(obj, prog.encode())
                if handle:
                    lib.bpf_program__set_autoload(handle, prog in chosen.values())
            lib.bpf_map__set_max_entries(lib.bpf_object__find_map_by_name(obj, b"frames"), ring_bytes)
            with log:
                err = -lib.bpf_object__load(obj)
            if err:
                refused = "processed" in log.text
                raise FatesError(f"load {path.name}",
                                 ("the verifier refused it" if refused else strerror(err)) +
                                 f":\n{log.text.strip()[-2000:]}",
                                 "report it with the log above: the program must load on every kernel it reads"
                                 if refused else "the lab needs CAP_BPF and CAP_PERFMON (root) and BTF-typed "
                                 "tracepoints (kernel 5.5+)", errno=err if err < 4000 else None)
            self._programs = {tp: lib.bpf_object__find_program_by_name(obj, prog.encode())
                              for tp, prog in chosen.items()}
            for tracepoint in self._programs:
                if tracepoint != "xdp_redirect":         # every redirect: only while a lab follows paths
                    self._attach(tracepoint)
            self.devices_fd = lib.bpf_object__find_map_fd_by_name(obj, b"devices")
            self.cpumaps_fd = lib.bpf_object__find_map_fd_by_name(obj, b"cpumaps")
            self.fates_fd = lib.bpf_object__find_map_fd_by_name(obj, b"fates")
            self.lost_fd = lib.bpf_object__find_map_fd_by_name(obj, b"lost")
            self._callback = _RingCallback(self._on_frame)
            self._ring = lib.ring_buffer__new(lib.bpf_object__find_map_fd_by_name(obj, b"frames"),
                                              ctypes.cast(self._callback, ctypes.c_void_p), None, None)
            if not self._ring:
                raise FatesError("open the ring buffer of dropped frames", strerror(ctypes.get_errno()),
                                 "is the kernel 5.8 or newer?")
        except BaseException:
            self.close()
            raise
        self.frames: dict[tuple[int, int], list[FrameEvent]] = {}

    def _attach(self, tracepoint: str) -> None:
        from .elf import strerror
        link = self._lib.bpf_program__attach(self._programs[tracepoint])
        if not link:
            self.kernel.missing[tracepoint] = f"not recorded: attaching to it failed ({strerror(ctypes.get_errno())})"
            return
        self._links[tracepoint] = link

    def follow_paths(self, on: bool) -> None:
        """Count every successful redirect (xdp:xdp_redirect) while at least one lab asks for
        it. It fires once per redirected frame: about 20-30% of a veth's forwarding rate here
        (python -m lab bench), so it is off unless asked for."""
        if "xdp_redirect" not in self._programs:
            return
        self._paths += 1 if on else -1
        if self._paths == 1 and on and "xdp_redirect" not in self._links:
            self._attach("xdp_redirect")
        elif self._paths == 0 and "xdp_redirect" in self._links:
            self._lib.bpf_link__destroy(self._links.pop("xdp_redirect"))

    def _on_frame(self, _ctx: int, data: int, size: int) -> int:
        raw = ctypes.string_at(data, size)
        location, when, netns, ifindex, reason, length, caplen, _pad = _FRAME.unpack_from(raw)
        kept = self.frames.get((netns, ifindex))
        if kept is not None:
            kept.append(FrameEvent(netns, ifindex, reason, location, when, length,
                                   raw[_FRAME.size:_FRAME.size + min(caplen, FRAME_BYTES)]))
        return 0

    # devices ------------------------------------------------------------------------------
    def watch(self, devices: Iterable[tuple[int, int]]) -> None:
        for d in devices:
            self.frames.setdefault(d, [])
            bpfsys.update(self.devices_fd, _DEV.pack(*d), struct.pack("<I", 1))

    def watch_maps(self, ids: Iterable[int]) -> None:
        """Record the events of these cpumaps (they name no device, only their map)."""
        for i in ids:
            bpfsys.update(self.cpumaps_fd, struct.pack("<I", i), struct.pack("<I", 1))

    def unwatch_maps(self, ids: Iterable[int]) -> None:
        if self._obj is None:
            return
        gone = set(ids)
        for i in gone:
            bpfsys.delete(self.cpumaps_fd, struct.pack("<I", i))
        for key in bpfsys.keys(self.fates_fd, _KEY.size):
            f = _KEY.unpack(key)
            if f[0] in (7, 8) and f[7] in gone:
                bpfsys.delete(self.fates_fd, key)

    def unwatch(self, devices: Iterable[tuple[int, int]]) -> None:
        """Stop watching `devices` and forget what was recorded about them."""
        if self._obj is None:
            return
        gone = set(devices)
        for d in gone:
            bpfsys.delete(self.devices_fd, _DEV.pack(*d))
        self.consume()
        for key in bpfsys.keys(self.fates_fd, _KEY.size):
            f = _KEY.unpack(key)
            if (f[1], f[2]) in gone or ((f[1], f[2]) == (0, 0) and (f[5], f[6]) in gone):
                bpfsys.delete(self.fates_fd, key)
        for d in gone:
            self.frames.pop(d, None)

    # reading ------------------------------------------------------------------------------
    def consume(self) -> None:
        if self._ring:
            self._lib.ring_buffer__consume(self._ring)

    def counts(self) -> dict[tuple[int, ...], tuple[int, int, int]]:
        """Every counted event: fate_key fields -> (events, frames, drops)."""
        out = {}
        cpus = bpfsys.possible_cpus()
        for key in bpfsys.keys(self.fates_fd, _KEY.size):
            val = bpfsys.lookup(self.fates_fd, key, _VAL.size * cpus)      # one value per CPU
            if val is not None:
                per_cpu = [_VAL.unpack_from(val, i * _VAL.size) for i in range(cpus)]
                out[_KEY.unpack(key)] = tuple(sum(v[j] for v in per_cpu) for j in range(3))
        return out

    def lost(self) -> dict[int, int]:
        """Per kind, events the kernel could not keep (slot 0: dropped frames whose bytes the
        full ring buffer could not take)."""
        out = {}
        for kind in range(len(EVENTS) + 1):
            raw = bpfsys.lookup(self.lost_fd, struct.pack("<I", kind), 8)
            if raw and struct.unpack("<Q", raw)[0]:
                out[kind] = struct.unpack("<Q", raw)[0]
        return out

    def close(self) -> None:
        lib = self._lib
        if self._ring:
            lib.ring_buffer__free(self._ring)
            self._ring = None
        while self._links:
            lib.bpf_link__destroy(self._links.popitem()[1])
        if self._obj is not None:
            lib.bpf_object__close(self._obj)
            self._obj = None


_recorder = OnePerProcess(lambda: Recorder(), FatesError)


def recorder() -> Recorder:
    """This process's recorder, loaded on first use; raises FatesError (the same one every
    time) when the kernel's events cannot be recorded here."""
    return _recorder.get()


def close() -> None:
    """Detach and unload this process's recorder (end of a session or command)."""
    _recorder.close()


def netns_inode(iface: "Interface") -> int:
    return os.fstat(iface.ns.fd).st_ino


def devices(ifaces: Iterable["Interface"]) -> list[tuple[int, int]]:
    return [(netns_inode(i), i.ifindex) for i in ifaces]


# kernel symbols ------------------------------------------------------------------------------
_symbols: tuple[list[int], list[str]] | None = None


def symbol(address: int) -> str:
    """"function+0xoff" for a kernel text address, from /proc/kallsyms (root sees addresses)."""
    global _symbols
    if _symbols is None:
        pairs = []
        try:
            with open("/proc/kallsyms") as f:
                for line in f:
                    addr, kind, name = line.split()[:3]
                    if kind in "tT" and addr != "0000000000000000":
                        pairs.append((int(addr, 16), name))
        except OSError:
            pass
        pairs.sort()
        _symbols = ([a for a, _ in pairs], [n for _, n in pairs])
    addrs, names = _symbols
    i = bisect.bisect_right(addrs, address) - 1
    if i < 0 or not address:
        return f"{address:#x}"
    return f"{names[i]}+{address - addrs[i]:#x}"


def errno_name(err: int) -> str:
    """EOPNOTSUPP for -95 (Python's table says ENOTSUP, its alias on Linux, which no kernel source uses)."""
    if not err:
        return ""
    return "EOPNOTSUPP" if -err == _errno.EOPNOTSUPP else _errno.errorcode.get(-err, str(err))


# what a lab sees -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    """Frames the lab put on an interface: `count` copies of `raw`, from `time` on (ns,
    CLOCK_MONOTONIC: the clock of the kernel's event times)."""
    seq: int
    where: str
    raw: bytes
    count: int
    time: int = 0

    def matches(self, data: bytes, length: int) -> bool:
        """Is a dropped frame (its first bytes and full length) one of these? Compared from
        the EtherType on: a MAC rewrite on the way does not hide a frame, nor does the stack
        taking a VLAN tag out of the bytes (skb_vlan_untag) before it dropped the frame."""
        if len(data) <= 12:
            return False
        if length == len(self.raw) and self.raw[12:len(data)] == data[12:]:
            return True
        untagged = self.raw[:12] + self.raw[16:] if self.raw[12:14] in (b"\x81\x00", b"\x88\xa8") else b""
        return length == len(untagged) and untagged[12:len(data)] == data[12:]

    def __str__(self) -> str:
        from .packets import summary
        return f"send #{self.seq} on {self.where}: {self.count} x {len(self.raw)} bytes, {summary(self.raw)}"


@dataclass(frozen=True, order=True)
class Fate:
    """One kind of thing the kernel did to frames at one place. `label` is how a test names
    it: "xdp_redirect -> fwd/veth2", "xdp_redirect_err EOPNOTSUPP -> fwd/veth2",
    "xdp_exception XDP_ABORTED", "xdp_devmap_xmit drops -> fwd/veth2", "kfree_skb OTHERHOST",
    and "af_packet tp_drops" for frames a lab capture's full socket dropped (no tracepoint
    fires for those: a tap's skb is a reference shared with the stack; the socket's
    PACKET_STATISTICS count them)."""
    where: str
    event: str
    what: str = ""
    to: str = ""
    program: str = ""
    via: str = ""
    location: str = ""
    ends: bool = False          # the frames end here (dropped)

    @property
    def label(self) -> str:
        return " ".join(x for x in (self.event, self.what, f"-> {self.to}" if self.to else "") if x)

    def describe(self) -> str:
        bits = [self.label]
        if self.via:
            bits.append(f"via {self.via}")
        if self.program:
            bits.append(f"by {self.program}")
        if self.location:
            bits.append(f"in {self.location}")
        return " ".join(bits)


@dataclass(frozen=True)
class DroppedFrame:
    """One skb the kernel dropped on a lab device, and the lab's send it belongs to."""
    dev: tuple[int, int]
    index: int                  # its place among the frames dropped on `dev`
    where: str
    reason: str
    location: str
    length: int
    data: bytes
    send: Send | None


@dataclass
class Fates:
    """What the kernel did with frames on a lab's devices: `counts` per Fate (number of
    frames), `frames` the dropped skbs one by one, `lost` events the kernel could not keep,
    `missing` the events this kernel does not report (and why)."""
    counts: dict[Fate, int] = field(default_factory=dict)
    frames: list[DroppedFrame] = field(default_factory=list)
    lost: dict[str, int] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    kept: dict[tuple[int, int], int] = field(default_factory=dict)   # frames recorded per device so far
    lab: "Lab | None" = field(default=None, compare=False, repr=False)   # where to read them again
    # per Fate, how many times the kernel reported it (tracepoint hits: one per batch where a
    # tracepoint reports a batch, as xdp_cpumap_kthread and xdp_devmap_xmit do)
    events: dict[Fate, int] = field(default_factory=dict, compare=False)

    def __sub__(self, before: "Fates") -> "Fates":
        counts = {f: n - before.counts.get(f, 0) for f, n in self.counts.items() if n != before.counts.get(f, 0)}
        frames = [f for f in self.frames if f.index >= before.kept.get(f.dev, 0)]
        lost = {k: n - before.lost.get(k, 0) for k, n in self.lost.items() if n != before.lost.get(k, 0)}
        events = {f: n - before.events.get(f, 0) for f, n in self.events.items() if n != before.events.get(f, 0)}
        return Fates(counts, frames, lost, self.missing, self.kept, self.lab, events)

    def reports(self, where: str, label: str) -> int:
        """How many times the kernel reported `label` at `where` (see `events`)."""
        return sum(n for f, n in self.events.items() if f.where == where and f.label == label)

    def mapping(self) -> dict[str, dict[str, int]]:
        """{where: {label: frames}}: the form `assert_fates` compares."""
        out: dict[str, dict[str, int]] = {}
        for f, n in self.counts.items():
            mine = out.setdefault(f.where, {})
            mine[f.label] = mine.get(f.label, 0) + n
        return out

    def ended(self) -> int:
        """Frames whose fate was to be dropped."""
        return sum(n for f, n in self.counts.items() if f.ends)

    def mismatches(self, expected: Mapping[str, Mapping[str, int]]) -> list[str]:
        """Differences from `expected`, in what this kernel can say: an event it does not
        report (self.missing: probed from its BTF) is left out of the comparison, and where
        kfree_skb has no reason (before 5.17) the expected reasons are compared as one."""
        from .counters import exact_mismatches
        return exact_mismatches(self.mapping(), self.as_this_kernel_says(expected))

    def as_said(self, label: str) -> str | None:
        """`label` as this kernel says it: kfree_skb without its reason before 5.17; None for
        an event this kernel does not report."""
        event = label.split(" ", 1)[0]
        if event in self.missing:
            return None
        return f"kfree_skb {NO_REASON}" if event == "kfree_skb" and REASON in self.missing else label

    def as_this_kernel_says(self, expected: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for where, labels in expected.items():
            for label, n in labels.items():
                said = self.as_said(label)
                if said is not None:
                    out.setdefault(where, {})
                    out[where][said] = out[where].get(said, 0) + n
        return out

    def table(self) -> str:
        """One row per fate: where, what, how many frames; then every problem with the record."""
        rows = [f"  {f.where:<16} {f.describe():<70} {n:>8}{'   <-- dropped' if f.ends else ''}"
                for f, n in sorted(self.counts.items())]
        out = rows or ["  (the kernel reported nothing about the lab's frames)"]
        out += [f"  {event}: {why}" for event, why in sorted(self.missing.items())]
        for what, n in sorted(self.lost.items()):
            if what == RING_LOST:
                out.append(f"  the bytes of {n} dropped frames were not kept (the ring buffer was full): the counts "
                           "above are exact, the list of dropped frames is short")
            else:
                out.append(f"  {n} {what} lost (the kernel's table was full): the counts above are short")
        return "\n".join(out)

    def by_send(self) -> str:
        """The dropped skbs, grouped by the lab's send they belong to, with their MAC
        addresses as the kernel dropped them where a program rewrote them."""
        from .packets import summary
        groups: dict[tuple[str, str], int] = {}
        for fr in self.frames:
            if fr.send is None:
                who = f"not one of this lab's sends ({_summary(fr.data, fr.length)}): sent by the stack, another " \
                      "program or command"
            else:
                who = str(fr.send)
            how = f"{fr.where}: kfree_skb {fr.reason} in {fr.location}"
            if fr.send is not None and fr.data[:12] != fr.send.raw[:12]:
                how += ", as dropped: " + " ".join(summary(fr.data).split(" ")[:3])   # "src > dst"
            groups[(who, how)] = groups.get((who, how), 0) + 1
        return "\n".join(f"  {who}\n    {n} dropped on {how}" for (who, how), n in groups.items()) \
            or "  (no skb was dropped)"


def _summary(data: bytes, length: int) -> str:
    from .packets import summary
    text = summary(data)
    return text if text.startswith("runt") else f"{text}, {length} bytes"


def read(lab: "Lab", rec: Recorder | None = None) -> Fates:
    """Everything the kernel reported about the lab's devices since they were watched (by
    this process's recorder, or `rec`)."""
    rec = rec or recorder()
    rec.consume()
    names = _Names(lab, rec.kernel)
    counts: dict[Fate, int] = {}
    reports: dict[Fate, int] = {}
    for key, (events, frames, drops) in rec.counts().items():
        for fate, n in names.fates(key, frames, drops):
            counts[fate] = counts.get(fate, 0) + n
            reports[fate] = reports.get(fate, 0) + events
    dropped = []
    kept = {}
    for dev in names.devices:
        frame_events = rec.frames.get(dev, [])
        kept[dev] = len(frame_events)
        for index, ev in enumerate(frame_events):
            where = names.device(ev.netns, ev.ifindex)
            # the latest send of these bytes before the kernel dropped it
            send = next((s for s in reversed(lab.sends) if s.time <= ev.time and s.matches(ev.data, ev.length)),
                        None)
            dropped.append(DroppedFrame(dev, index, where, rec.kernel.reason(ev.reason), symbol(ev.location), ev.length,
                                        ev.data, send))
    for c in lab.captures:      # no tracepoint reports these: the socket's own statistics do
        if c.drops:
            fate = Fate(c.iface.key, "af_packet", "tp_drops", ends=True)
            counts[fate] = counts.get(fate, 0) + c.drops
    lost = {(RING_LOST if k == 0 else f"{EVENTS[k][0]} events"): n for k, n in rec.lost().items()}
    return Fates(counts, dropped, lost, dict(rec.kernel.missing), kept, lab, reports)


class _Names:
    """Kernel numbers in a lab's names: devices, programs, maps."""

    def __init__(self, lab: "Lab", kernel: KernelEvents) -> None:
        self.lab = lab
        self.by_dev = {(netns_inode(i), i.ifindex): key for key, i in lab.interfaces.items()}
        self.devices = list(self.by_dev)
        self.reasons = kernel
        self.progs: dict[int, str] = {}
        self.maps: dict[int, str] = {}
        self.cpumap_homes: dict[int, str] = {}
        for p in lab.programs:
            placed = p.placements()
            for iface, mode, pid in placed:
                self.progs[pid] = f"{p.name} ({mode} on {iface.key}, id {pid})"
            for name, m in p.maps.items():
                self.maps[m.info.id] = name
                if m.info.type == CPUMAP and placed:
                    self.cpumap_homes.setdefault(m.info.id, placed[0][0].key)

    def cpumap(self, kind: int, code: int, map_id: int, cpu: int, frames: int, drops: int) -> list[tuple[Fate, int]]:
        """cpumap events: where the cpumap's program is attached; "-> cpu N" (enqueue) or
        "on cpu N" (the kthread that made skbs of them, and what the entry's program did)."""
        if map_id not in self.cpumap_homes:
            return []
        where, via = self.cpumap_homes[map_id], f"{self.maps.get(map_id, f'map id {map_id}')}[{cpu}]"
        event = EVENTS[kind][0]
        if kind == 7:
            out = [(Fate(where, event, "", f"cpu {cpu}", via=via), frames)] if frames else []
            if drops:
                out.append((Fate(where, event, "drops", f"cpu {cpu}", via=via, ends=True), drops))
            return out
        if code:
            act = CPUMAP_PROGRAM.get(code, f"action {code}")
            return [(Fate(where, event, f"{act} on cpu {cpu}", ends=act == "XDP_DROP"), frames)]
        out = [(Fate(where, event, f"on cpu {cpu}"), frames)] if frames else []
        if drops:
            out.append((Fate(where, event, f"drops on cpu {cpu}", ends=True), drops))
        return out

    def device(self, netns: int, ifindex: int) -> str:
        return self.by_dev.get((netns, ifindex)) or f"ifindex {ifindex} (netns {netns})"

    def program(self, pid: int) -> str:
        if pid in self.progs or not pid:
            return self.progs.get(pid, "")
        try:
            fd = bpfsys.prog_fd_by_id(pid)
            try:
                return f"{bpfsys.prog_info(fd).name} (id {pid})"
            finally:
                os.close(fd)
        except OSError:
            return f"program id {pid}"

    def fates(self, key: tuple[int, ...], frames: int, drops: int) -> list[tuple[Fate, int]]:
        kind, netns, ifindex, prog_id, code, to_netns, to_ifindex, map_id, map_index, _pad, location = key
        if kind in (7, 8):
            return self.cpumap(kind, code, map_id, map_index, frames, drops)
        mine = (netns, ifindex) in self.by_dev or (netns == ifindex == 0 and (to_netns, to_ifindex) in self.by_dev)
        if not mine:
            return []
        where = self.device(netns, ifindex) if ifindex else "(a device of another namespace)"
        to = self.device(to_netns, to_ifindex) if to_ifindex else ""
        event = EVENTS[kind][0]
        prog = self.program(prog_id)
        via = f"{self.maps.get(map_id, f'map id {map_id}')}[{map_index}]" if map_id else ""
        if kind == 1:
            act = XDP_ACTIONS[code] if 0 <= code < len(XDP_ACTIONS) else f"action {code}"
            return [(Fate(where, event, act, program=prog, ends=True), frames)]
        if kind in (2, 3):
            what = errno_name(code) if kind == 3 else ""
            return [(Fate(where, event, what, to, prog, via, ends=kind == 3), frames)]
        if kind in (4, 5):
            out = []
            if frames:
                out.append((Fate(where, event, "", to), frames))
            if drops:
                out.append((Fate(where, event, " ".join(x for x in ("drops", errno_name(code)) if x), to,
                                 ends=True), drops))
            return out
        return [(Fate(where, event, self.reasons.reason(code), location=symbol(location), ends=True), frames)]


# assertions ----------------------------------------------------------------------------------
def assert_fates(before: Fates | None, expected: Mapping[str, Mapping[str, int]], timeout: float = 2.0) -> Fates | None:
    """Assert that since `before` (a lab.fates() taken before the traffic) the kernel
    reported exactly the `expected` fates, {where: {label: frames}}, and nothing else:
    every frame met a fate the test named. Re-reads until they match or `timeout` passes
    (events of frames still in flight). Where the kernel's events cannot be recorded
    (`before` is None: see fates_before), warns and returns None: the scenario runs on
    with its counter checks. Example::

        before = lab.fates()
        lab.port("net1/veth1").send(frame, count=100)
        assert_fates(before, {"fwd/veth0": {"xdp_exception XDP_ABORTED": 100}})
    """
    if before is None:
        warnings.warn("fates not checked: the kernel's events are not recorded for this lab", stacklevel=2)
        return None
    from .settle import settled_read
    lab = _lab_of(before)
    d = settled_read([lab], lambda: lab.fates() - before, lambda f: not f.mismatches(expected), timeout)
    bad = d.mismatches(expected)
    if bad:
        raise AssertionError("the kernel's fates differ from the expectation:\n  " + "\n  ".join(bad) +
                             "\nwhat the kernel reported:\n" + d.table() + "\ndropped frames:\n" + d.by_send())
    return d


def fates_when(before: Fates, done: "Callable[[Fates], bool]", timeout: float = 2.0) -> Fates:
    """The fates since `before`, re-read until `done(fates)` holds (the books of frames the
    kernel handles out of line, a cpumap's kthread say, balance) or the liveness bound passes
    (`timeout`, times the machine's pace); the caller asserts on what it returns."""
    from .settle import settled_read
    lab = _lab_of(before)
    return settled_read([lab], lambda: lab.fates() - before, done, timeout)


def _lab_of(before: Fates) -> "Lab":
    if before.lab is None:
        raise FatesError("read the fates again", "these fates were not read from a lab (Fates() made by hand)",
                         "take them with lab.fates() before the traffic")
    return before.lab


def fates_before(lab: "Lab") -> Fates | None:
    """lab.fates() now, or None (with a warning naming why) where they are not recorded."""
    try:
        return lab.fates()
    except FatesError as e:
        warnings.warn(f"fates not recorded: {e}", stacklevel=2)
        return None


def refused_redirect(ingress: str, target: str, frames: int, features: bool) -> dict[str, dict[str, int]]:
    """The fates of `frames` frames that a native-mode program redirected (through a
    devmap) into a veth that cannot take them (its peer runs no NAPI). Kernels that report
    XDP features (6.3+) refuse them at the redirect: xdp_redirect_err EOPNOTSUPP on the
    ingress. Older kernels (6.1) accept the redirect and the target's transmit fails:
    xdp_devmap_xmit with drops and ENXIO."""
    if features:
        return {ingress: {f"xdp_redirect_err EOPNOTSUPP -> {target}": frames}}
    return {ingress: {f"xdp_devmap_xmit drops ENXIO -> {target}": frames}}


# the story of the lab's frames (fates.txt) -------------------------------------------------
def story(lab: "Lab", f: Fates, moved: Mapping[str, Mapping[str, int]], since: str) -> str:
    """Per group of frames: where they were sent, the path they took (interfaces, programs,
    what the kernel did there) and where and why they ended, with the counters that moved
    at each interface beside it."""
    by_where: dict[str, list[tuple[Fate, int]]] = {}
    for fate, n in sorted(f.counts.items(), key=lambda x: (x[0].where, _RANK.get(x[0].event, 9), x[0].label)):
        by_where.setdefault(fate.where, []).append((fate, n))
    progs: dict[str, list[str]] = {}
    for p in lab.programs:
        for iface, mode, pid in p.placements():
            progs.setdefault(iface.key, []).append(f"{p.name} ({mode}, id {pid})")
    lines = [f"What the kernel did with the lab's frames, {since}.",
             "Each interface shows the programs attached there, the counters that moved, and the kernel's",
             "events (tracepoints), '<-- dropped' where frames ended.", ""]
    shown: set[str] = set()

    def peer(key: str) -> str | None:
        try:
            return lab.peer(key).key
        except LabError:
            return None

    def counters(key: str) -> str:
        c = moved.get(key, {})
        return ", ".join(f"{name} {v:+d}" for name, v in sorted(c.items())) or "no counter moved"

    def visit(key: str, depth: int) -> None:
        pad = "  " * depth
        if key in shown:
            lines.append(f"{pad}{key}: (see above)")
            return
        shown.add(key)
        lines.append(f"{pad}{key}: {'; '.join(progs.get(key, [])) or 'no XDP program'}")
        lines.append(f"{pad}  counters: {counters(key)}")
        here = by_where.get(key, [])
        targets: list[str] = []
        for fate, n in here:
            lines.append(f"{pad}  {n:>8} x {fate.describe()}{'   <-- dropped' if fate.ends else ''}")
            if fate.to in lab.interfaces and not fate.ends and fate.event in ("xdp_redirect", "xdp_devmap_xmit") \
                    and fate.to not in targets and fate.to not in shown:
                targets.append(fate.to)
        aborted = sum(n for f, n in here if f.event == "xdp_exception")
        freed = sum(n for f, n in here if f.event == "kfree_skb" and f.location.startswith(
            ("do_xdp_generic", "veth_xdp_rcv_skb")))
        if aborted and freed:
            lines.append(f"{pad}  (the frames of xdp_exception and of the kfree_skb after it are the same ones: an "
                         "aborted frame's skb is freed too)")
        for to in targets:
            other = peer(to)
            lines.append(f"{pad}  out of {to} ({counters(to)}), into "
                         + ("its peer:" if other else "a peer outside what is watched"))
            shown.add(to)
            if other:
                visit(other, depth + 2)

    starts = list(dict.fromkeys(s.where for s in lab.sends))
    for start in starts:
        for s in lab.sends:
            if s.where == start:
                lines.append(str(s))
        shown.add(start)
        other = peer(start)
        lines.append(f"  out of {start} ({counters(start)}), into " + ("its peer:" if other else "a peer outside "
                                                                         "what is watched"))
        if other:
            visit(other, 2)
        lines.append("")
    rest = [k for k in lab.interfaces if k not in shown and (k in by_where or moved.get(k))]
    if rest:
        lines.append("Other interfaces where counters moved or the kernel reported something (successful "
                     "redirects are followed only with fates=paths, --lab-fates=paths):"
                     if starts else "Interfaces where the kernel reported something or counters moved:")
        for key in rest:
            visit(key, 1)
        lines.append("")
    lines += ["Dropped frames, one by one (skb drops carry the frame's bytes):", f.by_send(), "",
              "Every event:", f.table()]
    return "\n".join(lines)


def to_json(f: Fates) -> dict[str, Any]:        # Any: JSON values
    """A Fates for scripts: every fate with its frames, the dropped frames grouped by send."""
    groups: dict[tuple[object, ...], int] = {}
    for fr in f.frames:
        k = (fr.send.seq if fr.send else None, fr.where, fr.reason, fr.location, fr.data.hex())
        groups[k] = groups.get(k, 0) + 1
    return {"fates": [{"where": x.where, "label": x.label, "event": x.event, "what": x.what, "to": x.to,
                       "program": x.program, "via": x.via, "location": x.location, "dropped": x.ends, "frames": n}
                      for x, n in sorted(f.counts.items())],
            "dropped_frames": [{"send": seq, "where": w, "reason": r, "location": loc, "bytes": data, "count": n}
                               for (seq, w, r, loc, data), n in groups.items()],
            "lost": f.lost, "not_reported": f.missing}
