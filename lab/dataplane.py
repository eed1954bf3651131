"""Ports and captures: raw AF_PACKET sockets opened inside a namespace, used from the root.

`Port.send()` puts frames on an interface as if a host behind it sent them, on a transmit
queue of your choice (`queue=N`: a veth hands the frame to its peer's receive queue N in
drv mode). `Capture`
sees what an interface *receives* (PACKET_IGNORE_OUTGOING), keeps every frame, counts its
own kernel drops (PACKET_STATISTICS) and offers PTF-style checks: `expect`, `expect_none`,
`expect_no_other`. A check that nothing (else) arrived is decided when the kernel has finished
with every frame sent (lab/settle.py), not after a fixed wait, and fails loudly if the capture
itself dropped.
Frames are kept as they arrived: the VLAN tag the kernel takes off before taps see a frame
is put back from PACKET_AUXDATA.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DataplaneError
from .pace import Bound
from .packets import Mask, Packet, as_mask, field_diff, hexdump, summary

if TYPE_CHECKING:
    from .built import Interface

ETH_P_ALL = 0x0003
ETH_HLEN = 14
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID = 1 << 4, 1 << 6
AUX_SPACE = socket.CMSG_SPACE(20)       # struct tpacket_auxdata
DEFAULT_TIMEOUT = 2.0        # how long to wait for frames that should arrive
NEGATIVE_TIMEOUT = 1.0       # how long a kernel that stays busy may delay a check that nothing
                             # arrived (lab.settle decides it at once when the kernel is quiet)
                             # (both x pace.slowdown(): longer on a slow machine)
SO_RCVBUFFORCE = 33         # not in Python 3.11's socket module
SO_ATTACH_FILTER, SO_DETACH_FILTER = 26, 27
_DROP_ALL = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))    # classic BPF: ret #0
_DROP_ALL_PROG = struct.pack("HxxxxxxP", 1, ctypes.addressof(_DROP_ALL))       # struct sock_fprog


def park(sock: socket.socket) -> None:
    """Keep a capture socket for a later test of a kept lab without closing it (closing an
    AF_PACKET socket waits for an RCU grace period: synchronize_net in packet_release, ~13 ms
    here): a filter drops every frame before it is queued (no copy), and what was queued
    is read away."""
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, _DROP_ALL_PROG)
    _drain(sock)


def unpark(sock: socket.socket) -> None:
    """A parked capture socket made ready again: the queue read away, its statistics read
    (the kernel resets them on each read), the filter off."""
    _drain(sock)
    sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)


def _drain(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return


_libc = ctypes.CDLL(None, use_errno=True)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(_Iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


BATCH = 1024


def _send_copies(fd: int, raw: bytes, count: int) -> None:
    """Send `count` copies of `raw` with sendmmsg(2), BATCH per system call: a Python loop of
    send() spends most of its time entering the kernel (about 470k frames/s here, against
    about 740k with sendmmsg)."""
    buf = ctypes.create_string_buffer(raw, len(raw))
    iov = _Iovec(ctypes.addressof(buf), len(raw))
    msgs = (_Mmsghdr * min(count, BATCH))()
    for m in msgs:
        m.hdr.iov, m.hdr.iovlen = ctypes.pointer(iov), 1
    left = count
    while left:
        n = _libc.sendmmsg(fd, msgs, min(left, BATCH), 0)
        if n < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        left -= n


def write_pcap(path: str, frames: "Iterable[tuple[float, bytes]]") -> None:
    """A classic pcap file (microsecond timestamps, LINKTYPE_ETHERNET)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for ts, raw in frames:
            sec = int(ts)
            f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(raw), len(raw)))
            f.write(raw)


def _with_vlan_tag(raw: bytes, ancillary: list[tuple[int, int, bytes]]) -> tuple[bytes, bool]:
    """The frame as it arrived, and whether its tag was put back: the kernel strips the outer
    VLAN tag before taps see a frame and hands it over as PACKET_AUXDATA."""
    for level, kind, data in ancillary:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 20:
            status, _len, _snap, _mac, _net, tci, tpid = struct.unpack_from("IIIHHHH", data)
            if status & TP_STATUS_VLAN_VALID:
                tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                return raw[:12] + struct.pack("!HH", tpid, tci) + raw[12:], True
    return raw, False


@contextlib.contextmanager
def _on_tx_queue(iface: "Interface", queue: int) -> Iterator[None]:
    """While inside, what this thread sends on `iface` leaves on transmit queue `queue`.

    Transmit Packet Steering (XPS) picks the queue from the sending CPU: the thread is pinned
    to one CPU and that CPU is mapped to `queue` alone, then both are put back. Works on any
    kernel with CONFIG_XPS (Debian's have it) and any number of queues, whatever the cores."""
    action = f"send on {iface.key} tx queue {queue!r}"
    if isinstance(queue, bool) or not isinstance(queue, int):
        raise DataplaneError(action, f"{queue!r} is not a queue number", "give queue=N, an int from 0")
    base = os.path.join(iface.ns.sysfs, "class/net", iface.name, "queues")
    try:
        queues = sorted(int(d[3:]) for d in os.listdir(base) if d.startswith("tx-"))
    except OSError as e:
        raise DataplaneError(action, f"read {base}: {e.strerror}", "check that the interface exists") from None
    if not 0 <= queue < len(queues):
        there = "queue 0" if len(queues) == 1 else f"queue 0 to {len(queues) - 1}"
        raise DataplaneError(action, f"{iface.key} has {len(queues)} tx queue(s)",
                             f"send on {there}" + (f", or give its end tx_queues={queue + 1} or more (queues=N "
                                                     "sets both)" if queue >= len(queues) else ""))
    if len(queues) == 1:
        yield
        return
    cpus = os.sched_getaffinity(0)
    cpu = min(cpus)
    files = [os.path.join(base, f"tx-{q}", "xps_cpus") for q in queues]
    try:
        saved = [Path(f).read_text().strip() for f in files]      # closed at once, not left to the GC
    except OSError as e:
        raise DataplaneError(action, f"read {e.filename}: {e.strerror} (a kernel without CONFIG_XPS?)",
                             "send without queue=; the frames then leave on the queue their flow hashes to") from None
    try:
        for q, f in zip(queues, files):
            try:
                with open(f, "w") as out:
                    out.write(format(1 << cpu if q == queue else 0, "x"))
            except OSError as e:
                raise DataplaneError(action, f"write {f}: {e.strerror}", "send without queue=; the frames then "
                                     "leave on the queue their flow hashes to", errno=e.errno) from None
        os.sched_setaffinity(0, {cpu})
        try:
            yield
        finally:
            os.sched_setaffinity(0, cpus)
    finally:
        for f, mask in zip(files, saved):
            with contextlib.suppress(OSError), open(f, "w") as out:
                out.write(mask)


class Port:
    """Send frames onto an interface from inside its namespace."""

    total_sent = 0      # frames sent by every Port of this process (the session summary)
    sending_s = 0.0     # seconds spent in send(), preflight included (the bench's phases)

    def __init__(self, iface: "Interface", sock: socket.socket | None = None) -> None:
        """A sender on `iface`: a new AF_PACKET socket, or `sock`, one a kept lab kept."""
        self.iface = iface
        if sock is not None:
            self.sock = sock
        else:
            self.sock = iface.ns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                self.sock.bind((iface.name, 0))
            except OSError as e:
                self.sock.close()
                raise DataplaneError(f"open port on {iface.key}", e.strerror or str(e), errno=e.errno) from None
        self.sent = 0

    def send(self, frame: Packet | bytes, count: int = 1, queue: int | None = None) -> None:
        """Send `count` copies of `frame`, after the lab's preflight checks pass; on transmit
        queue `queue` if given (else where the frame's flow hashes to)."""
        began = time.monotonic_ns()
        self.iface.lab.before_traffic()
        raw = self._checked(frame)
        self._send(raw, count, queue, began)

    def send_each(self, frames: Iterable[Packet | bytes], queue: int | None = None) -> None:
        """Send each of `frames` once, in order, after one preflight check for them all (a
        fuzz batch, a corpus); a frame too short to send is refused before any is sent."""
        began = time.monotonic_ns()
        raws = [self._checked(f) for f in frames]
        self.iface.lab.before_traffic()
        for raw in raws:
            self._send(raw, 1, queue, began)
            began = time.monotonic_ns()

    def _checked(self, frame: Packet | bytes) -> bytes:
        raw = bytes(frame)
        if len(raw) < ETH_HLEN:
            raise DataplaneError(f"send {len(raw)}-byte frame on {self.iface.key}",
                                 f"shorter than an Ethernet header ({ETH_HLEN} bytes): AF_PACKET refuses it (EINVAL)",
                                 "send 14 bytes or more; a runt never reaches XDP on a veth")
        return raw

    def _send(self, raw: bytes, count: int, queue: int | None, began: int) -> None:
        started = time.monotonic_ns()
        steer = _on_tx_queue(self.iface, queue) if queue is not None else contextlib.nullcontext()
        try:
            with steer:
                if count == 1:
                    self.sock.send(raw)
                else:
                    _send_copies(self.sock.fileno(), raw, count)
        except OSError as e:
            if e.errno == errno.ENOBUFS:     # the driver dropped it at transmit (NET_XMIT_DROP)
                fix = ("the kernel dropped it at transmit: a veth drops a frame larger than its peer's MTU + 18 "
                       "(the Ethernet header and one VLAN tag: is_skb_forwardable; tx_dropped here, rx_dropped "
                       "on the peer); check both ends' MTUs")
            else:
                fix = "check that the interface is up and the frame is at most its MTU + 14 bytes"
            raise DataplaneError(f"send {len(raw)}-byte frame on {self.iface.key}", e.strerror or str(e), fix,
                                 errno=e.errno) from None
        self.sent += count
        Port.total_sent += count
        Port.sending_s += (time.monotonic_ns() - began) / 1e9
        self.iface.lab.record_send(self.iface.key, raw, count, started)

    def close(self) -> None:
        self.sock.close()


class Capture:
    """Every frame an interface receives from the moment the capture is opened."""

    def __init__(self, iface: "Interface", rcvbuf: int = 32 << 20, sock: socket.socket | None = None) -> None:
        """A capture on `iface`: a new AF_PACKET socket, or `sock`, one a kept lab parked."""
        self.iface = iface
        if sock is not None:
            self.sock = sock
            unpark(sock)
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        else:
            self.sock = iface.ns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                self.sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
                self.sock.bind((iface.name, ETH_P_ALL))
            except OSError as e:
                self.sock.close()
                raise DataplaneError(f"open capture on {iface.key}", e.strerror or str(e), errno=e.errno) from None
        self.sock.setblocking(False)
        self.received: list[bytes] = []     # every frame, in order of arrival
        self.times: list[float] = []        # when poll() read each of them (for the pcap)
        self.pending: list[bytes] = []      # frames no expect() has claimed yet
        self.restored_tags = 0              # frames whose VLAN tag came in PACKET_AUXDATA, put back
        self._packets = self._drops = 0

    # reading -----------------------------------------------------------------------------
    def poll(self, timeout: float = 0.0) -> int:
        """Read what has arrived (waiting up to `timeout` for the first frame); returns how many."""
        n = 0
        if timeout > 0:
            select.select([self.sock], [], [], timeout)
        recvmsg = self.sock.recvmsg
        while True:
            try:
                raw, anc, _flags, _addr = recvmsg(65536, AUX_SPACE)
            except BlockingIOError:
                break
            raw, restored = _with_vlan_tag(raw, anc)
            self.restored_tags += restored
            self.received.append(raw)
            self.times.append(time.time())
            self.pending.append(raw)
            n += 1
        return n

    def _readable(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])

    @property
    def drops(self) -> int:
        """Frames the kernel dropped for this capture (its receive buffer was full)."""
        packets, drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self._packets += packets    # the kernel resets the statistics on every read
        self._drops += drops
        return self._drops

    def close(self) -> None:
        self.sock.close()

    def write_pcap(self, path: str) -> None:
        """Every received frame as a pcap file (tcpdump -r, Wireshark)."""
        write_pcap(path, zip(self.times, self.received))

    # checks ------------------------------------------------------------------------------
    def _report(self, headline: str, expected: Mask | None, frames: list[bytes], limit: int = 5) -> str:
        lines = [f"{headline} on {self.iface.key}"]
        if expected is not None:
            lines += [f"EXPECTED: {expected}", hexdump(expected.expected)]
        lines.append(f"RECEIVED: {len(frames)} frame(s) not matched" + (":" if frames else ""))
        for raw in frames[:limit]:
            lines += [f"  {summary(raw)}, {len(raw)} bytes", hexdump(raw)]
            if expected is not None:
                lines += [f"    differs in {d}" for d in field_diff(expected.expected, raw)]
        if len(frames) > limit:
            lines.append(f"  ... and {len(frames) - limit} more")
        lines.append(f"capture drops: {self.drops}")
        return "\n".join(lines)

    def expect(self, expected: Packet | Mask | bytes, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> list[bytes]:
        """Wait for `count` frames matching `expected` (a frame, bytes or a Mask) and claim them.
        Fails as soon as the kernel has finished with every frame sent (lab.settle) and too few
        arrived; `timeout` bounds a kernel that stays busy (x pace.slowdown())."""
        from .settle import wait_quiet
        mask = as_mask(expected)
        got: list[bytes] = []
        bound = Bound(timeout)
        while True:
            keep = []
            for raw in self.pending:
                if len(got) < count and mask.matches(raw):
                    got.append(raw)
                else:
                    keep.append(raw)
            self.pending = keep
            if len(got) >= count:
                return got
            if self.poll():
                continue
            quiet = wait_quiet([self.iface.lab], bound, until=self._readable)
            if self.poll():
                continue
            if quiet.settled or bound.expired():
                raise AssertionError(self._report(f"expected {count} matching frame(s), got {len(got)}",
                                                  mask, self.pending) + f"\n{quiet}")

    def expect_none(self, timeout: float = NEGATIVE_TIMEOUT) -> None:
        """Assert that no frame arrived that no expect() claimed, now that the kernel has
        finished with every frame sent (lab.settle: decided at once, without a clock; `timeout`
        only bounds a kernel that stays busy, x pace.slowdown())."""
        quiet = self.iface.lab.settle(timeout)
        self.poll()
        if self.pending:
            raise AssertionError(self._report("expected no frame", None, self.pending) + f"\n{quiet}")
        if self.drops:
            raise AssertionError(f"expected no frame on {self.iface.key}: the capture itself dropped "
                                 f"{self.drops} frame(s), so 'nothing arrived' cannot be believed")

    def expect_no_other(self, timeout: float = NEGATIVE_TIMEOUT) -> None:
        """Assert that every frame received so far was claimed by an expect() (see expect_none)."""
        self.expect_none(timeout)
