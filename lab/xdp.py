"""Attach an XDP program to an interface inside a namespace, confirm it, detach it.

Attach goes over rtnetlink (IFLA_XDP, raw: lab/rtnl.py) on the interface's namespace, with
extended acks, so a refusal carries the kernel's own reason ("veth: Peer MTU is too large to
set XDP").
The attach is then read back (IFLA_XDP_ATTACHED and the program id) and must match.
"""
from __future__ import annotations

import contextlib
import errno
import os
from typing import TYPE_CHECKING, NamedTuple

from .errors import XdpError

if TYPE_CHECKING:
    from .built import Interface
    from .once import OnePerProcess

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1     # generic XDP, `ip link` shows "xdpgeneric"
XDP_FLAGS_DRV_MODE = 1 << 2     # native XDP in the driver, `ip link` shows "xdp"

MODES = {"skb": XDP_FLAGS_SKB_MODE, "drv": XDP_FLAGS_DRV_MODE}
ATTACHED_NAMES = {"skb": "xdpgeneric", "drv": "xdp"}   # as pyroute2 decodes IFLA_XDP_ATTACHED
ATTACHED_MODES = {0: None, 1: "drv", 2: "skb", 3: "hw", 4: "multi"}   # IFLA_XDP_ATTACHED (XDP_ATTACHED_*)

# Known kernel refusals -> what the user can do.
_FIXES = (
    ("Peer MTU is too large", "lower the peer's MTU (a page must hold a frame: at most {max_mtu} on this "
                              "kernel) or use skb mode"),
    ("XDP program already attached", "detach the other program first (`ip link set dev IF xdp off`)"),
    ("Native and generic XDP can't be active at the same time", "detach the program of the other mode first"),
    ("queues", "give the veth more rx queues (`numrxqueues`) or use skb mode"),
    ("native XDP is not supported", "use skb mode: this device has no driver XDP"),
)


def veth_xdp_max_mtu() -> int | None:
    """The largest peer MTU with which veth takes a native XDP program (veth_xdp_set): a
    page, less the XDP headroom (256), the cache-aligned struct skb_shared_info (its size
    from the running kernel's BTF: 320 bytes on 6.18) and the Ethernet header. None where
    the kernel has no BTF."""
    from .btf import kernel_struct_size
    info = kernel_struct_size("skb_shared_info")
    if info is None:
        return None
    return os.sysconf("SC_PAGE_SIZE") - 256 - ((info + 63) & ~63) - 14


class XdpState(NamedTuple):     # (not a dataclass: `lab down` reads these without importing dataclasses)
    """What the kernel reports for an interface: mode ("skb", "drv", None) and program id."""
    mode: str | None
    prog_id: int

    def __str__(self) -> str:
        return "no xdp" if self.mode is None else f"{ATTACHED_NAMES.get(self.mode, self.mode)} id {self.prog_id}"


def _check_mode(mode: str) -> int:
    if mode not in MODES:
        raise XdpError(f"choose xdp attach mode {mode!r}", "unknown mode",
                       f"use one of {', '.join(MODES)}")
    return MODES[mode]


def query(iface: "Interface") -> XdpState:
    """Read the XDP state of an interface back over netlink (IFLA_XDP, read raw: lab.rtnl)."""
    from . import rtnl
    attached, prog_id = rtnl.link_xdp(iface.ns, iface.ifindex)
    return XdpState(ATTACHED_MODES.get(attached), prog_id)


def _set(iface: "Interface", fd: int, flags: int) -> None:
    from . import rtnl
    rtnl.set_xdp(iface.ns, iface.ifindex, fd, flags)


def detach(iface: "Interface", mode: str) -> None:
    """Detach the program of `mode` from `iface`. A device that is already gone counts as detached."""
    from .rtnl import RtnlError
    try:
        _set(iface, -1, MODES[mode])
    except RtnlError as e:
        if e.errno != errno.ENODEV:
            raise XdpError(f"detach xdp from {iface.key}", e.strerror or str(e), errno=e.errno) from None


class Attachment:
    """A program attached to one interface in one mode; `close()` detaches it."""

    def __init__(self, iface: "Interface", prog_fd: int, mode: str, prog_name: str = "") -> None:
        self.iface, self.mode = iface, mode
        from . import bpfsys
        self.prog_name = prog_name or bpfsys.prog_info(prog_fd).name
        flags = _check_mode(mode)
        action = f"attach xdp program {self.prog_name} to {iface.key} in {mode} mode"
        from .rtnl import RtnlError
        try:
            _set(iface, prog_fd, flags | XDP_FLAGS_UPDATE_IF_NOEXIST)
        except RtnlError as e:
            reason = e.strerror or str(e)
            fix = next((f for k, f in _FIXES if k in reason), "see `ip -d link show` in the namespace")
            fix = fix.format(max_mtu=veth_xdp_max_mtu() or "about 3500")
            raise XdpError(action, reason, fix, errno=e.errno, objects=(iface,)) from None
        self.prog_id = bpfsys.prog_info(prog_fd).id
        self._attached = True
        state = query(iface)
        if state.mode != mode or state.prog_id != self.prog_id:
            self.close()
            raise XdpError(action, f"the kernel reports {state}, not {ATTACHED_NAMES[mode]} id {self.prog_id}",
                           "report this: the attach call succeeded but did not take effect")

    @property
    def attached(self) -> bool:
        return self._attached

    def close(self) -> None:
        """Detach (idempotent). A device that is already gone counts as detached."""
        if not self._attached:
            return
        self._attached = False
        if self.iface.ns.closed:      # the namespace, and the device with it, is gone
            return
        detach(self.iface, self.mode)

    def __repr__(self) -> str:
        return f"Attachment({self.prog_name} on {self.iface.key}, {self.mode}, id {self.prog_id})"


class Parking:
    """Where the process's XDP programs stay registered in the kernel's XDP dispatcher.

    Every XDP attach and detach goes through bpf_prog_change_xdp: the dispatcher (a
    trampoline that calls up to 48 XDP programs directly instead of through a retpoline)
    adds the program the first time it is attached anywhere and drops it when its last
    attachment goes. Each of those rebuilds the dispatcher's image and waits for an RCU grace
    period (bpf_dispatcher_update): 8-9 ms here, for each attach and each detach of a test,
    against 0.04-0.2 ms while the program stays attached somewhere else. A test session
    attaches and detaches hundreds of times the same few programs, which the process keeps
    loaded anyway (lab.programs loads each object once per process). So the first time a
    program is attached, it is also attached in skb mode to a device of a namespace of the
    process's own (veth pairs left down: no frame ever runs it there), until the session
    ends. Nothing of a lab changes; the namespace is recorded like a lab's, so a killed
    process's is swept with them. A program generic XDP refuses is not parked (it stays slow)."""

    def __init__(self) -> None:
        from . import names
        from .netns import Netns
        self.ns = Netns.create(names.NameFactory().process_netns("xdp-parking"))
        self.free: list[int] = []           # ifindexes of parking devices without a program
        self.parked: dict[int, int] = {}    # program id -> ifindex of its parking device
        self.refused: set[int] = set()

    def park(self, fd: int, prog_id: int) -> None:
        """Keep the program of `fd` (kernel id `prog_id`) attached here (once per program)."""
        from . import rtnl
        if prog_id in self.parked or prog_id in self.refused:
            return
        if not self.free:
            n = len(self.parked) + len(self.refused)
            a, b = (rtnl.VethEnd(f"park{n}{side}", f"02:00:00:ff:{n % 256:02x}:{i:02x}") for i, side in enumerate("ab"))
            rtnl.add_veth(self.ns, a, b, self.ns.fd)
            self.free += [rtnl.link_index(self.ns, e.name) for e in (a, b)]
        index = self.free.pop()
        try:
            rtnl.set_xdp(self.ns, index, fd, XDP_FLAGS_SKB_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST)
        except rtnl.RtnlError:
            self.free.append(index)
            self.refused.add(prog_id)
            return
        self.parked[prog_id] = index

    def close(self) -> None:
        self.ns.remove()


_parking: "OnePerProcess[Parking] | None" = None


def park_programs() -> str | None:
    """From now on, keep every program XdpProgram attaches in the XDP dispatcher until
    unpark_programs() (Parking): None, or why it cannot."""
    global _parking
    from .errors import LabError
    from .once import OnePerProcess
    if _parking is None:
        _parking = OnePerProcess(Parking, LabError)
    try:
        _parking.get()
    except LabError as e:
        return str(e)
    return None


def park(fd: int, prog_id: int) -> None:
    """Park the program of `fd` (id `prog_id`) if parking is on (park_programs); else nothing."""
    if _parking is not None:
        from .errors import LabError
        with contextlib.suppress(LabError, OSError):      # parking is only ever a speed-up
            _parking.get().park(fd, prog_id)


def unpark_programs() -> None:
    """Let every parked program go (the session's end, before the objects are closed)."""
    global _parking
    if _parking is not None:
        _parking.close()
        _parking = None
