"""An AF_XDP socket from Python, in copy mode: UMEM, fill ring and RX ring, nothing more.

Opened inside a namespace and bound to one queue of one interface; put in an xskmap, it
receives what the XDP program redirects to it. `close()` unmaps the rings and the UMEM and
closes the socket (the kernel then drops it from every xskmap).

Layouts from include/uapi/linux/if_xdp.h. The rings are shared with the kernel: on x86_64
(stores are not reordered with other stores, nor loads with other loads) writing the
descriptors before the producer index, and reading the producer index before the
descriptors, is the order the protocol needs.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import DataplaneError
from .pace import Bound

if TYPE_CHECKING:
    from .built import Interface

AF_XDP, SOL_XDP = 44, 283
XDP_MMAP_OFFSETS, XDP_RX_RING, XDP_UMEM_REG, XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING = 1, 2, 4, 5, 6
XDP_STATISTICS = 7
XDP_PGOFF_RX_RING, XDP_UMEM_PGOFF_FILL_RING = 0, 0x100000000
XDP_COPY = 1 << 1
DESC = struct.Struct("QII")      # struct xdp_desc: addr, len, options
STATS = ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full", "rx_fill_ring_empty_descs",
         "tx_ring_empty_descs")

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class _Ring:
    mem: mmap.mmap
    producer: int
    consumer: int
    desc: int
    size: int

    def get(self, off: int) -> int:
        return int(struct.unpack_from("I", self.mem, off)[0])

    def put(self, off: int, value: int) -> None:
        struct.pack_into("I", self.mem, off, value & 0xFFFFFFFF)


class XskSocket:
    """An AF_XDP socket bound to `iface` queue `queue` in copy mode."""

    def __init__(self, iface: "Interface", queue: int = 0, frames: int = 256, frame_size: int = 2048) -> None:
        self.iface, self.queue, self.frame_size = iface, queue, frame_size
        action = f"open AF_XDP socket on {iface.key} queue {queue}"
        self.sock = iface.ns.socket(AF_XDP, socket.SOCK_RAW, 0)
        self.umem: mmap.mmap | None = None
        self.fill: _Ring | None = None
        self.rx: _Ring | None = None
        try:
            self.umem = mmap.mmap(-1, frames * frame_size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            view = ctypes.c_char.from_buffer(self.umem)
            base = ctypes.addressof(view)
            del view                          # no export left: close() can unmap the UMEM
            self._sockopt(XDP_UMEM_REG, struct.pack("QQII", base, frames * frame_size, frame_size, 0))
            ring = frames                   # ring sizes: powers of two
            self._sockopt(XDP_UMEM_FILL_RING, struct.pack("I", ring))
            self._sockopt(XDP_UMEM_COMPLETION_RING, struct.pack("I", ring))
            self._sockopt(XDP_RX_RING, struct.pack("I", ring))
            off = struct.unpack("16Q", self.sock.getsockopt(SOL_XDP, XDP_MMAP_OFFSETS, 128))
            rx_off, fr_off = off[0:4], off[8:12]
            self.rx = self._map(rx_off, ring, DESC.size, XDP_PGOFF_RX_RING)
            self.fill = self._map(fr_off, ring, 8, XDP_UMEM_PGOFF_FILL_RING)
            for i in range(ring):             # hand every UMEM frame to the kernel
                struct.pack_into("Q", self.fill.mem, self.fill.desc + 8 * i, i * frame_size)
            self.fill.put(self.fill.producer, ring)
            addr = struct.pack("HHIII", AF_XDP, XDP_COPY, iface.ifindex, queue, 0)
            # A socket closed on this queue a moment ago still holds it: the kernel releases
            # its buffer pool from a worker (xp_release_deferred), so EBUSY is retried briefly.
            from .pace import Bound
            bound = Bound(1.0)
            while _libc.bind(self.sock.fileno(), addr, len(addr)) != 0:
                err = ctypes.get_errno()
                if err == errno.EBUSY and not bound.expired():
                    time.sleep(0.001)
                    continue
                fix = ("the interface has no such queue: give it more rx queues (End(rx_queues=...))"
                       if err == errno.EINVAL else "another AF_XDP socket is bound to this queue: close it"
                       if err == errno.EBUSY else "see dmesg")
                raise DataplaneError(action, f"bind: {os.strerror(err)}", fix, errno=err)
        except OSError as e:
            self.close()
            raise DataplaneError(action, e.strerror or str(e), "does the kernel have AF_XDP (CONFIG_XDP_SOCKETS)?",
                                 errno=e.errno) from None
        except BaseException:
            self.close()
            raise
        self._rx_seen = 0

    def _sockopt(self, opt: int, value: bytes) -> None:
        self.sock.setsockopt(SOL_XDP, opt, value)

    def _map(self, off: tuple[int, ...], size: int, desc_size: int, pgoff: int) -> _Ring:
        producer, consumer, desc, _flags = off
        mem = mmap.mmap(self.sock.fileno(), desc + size * desc_size, flags=mmap.MAP_SHARED,
                        prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=pgoff)
        return _Ring(mem, producer, consumer, desc, size)

    @property
    def fd(self) -> int:
        return self.sock.fileno()

    def receive(self, count: int, timeout: float = 2.0) -> list[bytes]:
        """Up to `count` frames from the RX ring: returns as soon as `count` are read, or when
        the kernel has finished with every frame sent (lab.settle: the kernel fills the ring in
        the softirq that carries the frame, so nothing more can come then), or at `timeout`,
        a liveness bound. Each frame's UMEM chunk goes back to the fill ring."""
        assert self.rx is not None and self.fill is not None and self.umem is not None
        from .settle import wait_quiet
        out: list[bytes] = []
        bound = Bound(timeout)
        settled = False
        while len(out) < count:
            prod, cons = self.rx.get(self.rx.producer), self.rx.get(self.rx.consumer)
            if prod == cons:
                if settled or bound.expired():
                    break
                rx = self.rx
                settled = wait_quiet([self.iface.lab], bound,
                                     until=lambda: rx.get(rx.producer) != rx.get(rx.consumer)).settled
                continue
            fill_prod = self.fill.get(self.fill.producer)
            while cons != prod and len(out) < count:
                addr, length, _opt = DESC.unpack_from(self.rx.mem, self.rx.desc + DESC.size * (cons % self.rx.size))
                out.append(bytes(self.umem[addr:addr + length]))
                chunk = addr - addr % self.frame_size
                struct.pack_into("Q", self.fill.mem, self.fill.desc + 8 * (fill_prod % self.fill.size), chunk)
                fill_prod += 1
                cons += 1
            self.fill.put(self.fill.producer, fill_prod)
            self.rx.put(self.rx.consumer, cons)
        return out

    def statistics(self) -> dict[str, int]:
        """struct xdp_statistics: what the kernel dropped for this socket."""
        raw = self.sock.getsockopt(SOL_XDP, XDP_STATISTICS, 48)
        return dict(zip(STATS, struct.unpack(f"{len(raw) // 8}Q", raw)))

    def close(self) -> None:
        """Unmap the rings and the UMEM, close the socket (idempotent)."""
        for ring in (self.rx, self.fill):
            if ring is not None:
                ring.mem.close()
        self.rx = self.fill = None
        if self.umem is not None:
            self.umem.close()
            self.umem = None
        self.sock.close()
