"""The few rtnetlink reads the lab makes on every wait and every check, done raw.

pyroute2 (`Netns.ipr`) is the lab's netlink handle for everything it changes, and yours; its
parsing costs about a millisecond a message, which the lab pays in the hot paths: reading an
interface's XDP state (preflight before every send, attach read-back, reports) and the
qdiscs of a namespace (every wait for the kernel to finish, lab/settle.py). Here those two
requests are packed and their answers parsed by hand (and an interface's operational
state, polled while a lab is built): struct nlmsghdr, struct ifinfomsg /
struct tcmsg and the attributes the lab reads (include/uapi/linux/rtnetlink.h, if_link.h,
pkt_sched.h). A socket per namespace, kept open with the Netns handle.
"""
from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .netns import Netns

NLMSG = struct.Struct("=IHHII")             # struct nlmsghdr
RTA = struct.Struct("=HH")                  # struct rtattr
IFINFOMSG = struct.Struct("=BxHiII")        # struct ifinfomsg
TCMSG = struct.Struct("=BxxxiIII")          # struct tcmsg
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
RTM_GETLINK, RTM_GETQDISC = 18, 38
IFLA_OPERSTATE, IFLA_XDP = 16, 43
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")   # IF_OPER_*
IFLA_XDP_ATTACHED, IFLA_XDP_PROG_ID = 2, 4
TCA_KIND, TCA_STATS = 1, 3
TC_STATS = struct.Struct("=QIIIIII")        # struct tc_stats up to qlen (its 7th field)


class RtnlError(OSError):
    """The kernel answered a request with an error."""


def _messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, start of the body, end) of each message in one receive."""
    at = 0
    while at + NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSG.unpack_from(data, at)
        if length < NLMSG.size:
            return
        yield kind, at + NLMSG.size, at + length
        at += (length + 3) & ~3


def attributes(data: bytes, at: int, end: int) -> dict[int, bytes]:
    """type -> body of each attribute in data[at:end] (nested ones stay bytes: parse them again)."""
    out: dict[int, bytes] = {}
    while at + RTA.size <= end:
        length, kind = RTA.unpack_from(data, at)
        if length < RTA.size:
            break
        out[kind & 0x3fff] = data[at + RTA.size:at + length]      # without NLA_F_NESTED / NET_BYTEORDER
        at += (length + 3) & ~3
    return out


def request(ns: "Netns", kind: int, flags: int, body: bytes) -> Iterator[tuple[bytes, int, int]]:
    """Send one request in the namespace; yield (data, start, end) of each answer's body."""
    sock = ns.rtnl
    seq = ns.next_seq()
    sock.send(NLMSG.pack(NLMSG.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
    while True:
        data = sock.recv(1 << 16)
        done = not flags & NLM_F_DUMP
        for mtype, start, end in _messages(data):
            if NLMSG.unpack_from(data, start - NLMSG.size)[3] != seq:
                continue            # an answer to an earlier request that was given up on
            if mtype == NLMSG_DONE:
                return
            if mtype == NLMSG_ERROR:
                err = -struct.unpack_from("=i", data, start)[0]
                if err:
                    raise RtnlError(err, os.strerror(err))
                return
            yield data, start, end
        if done:
            return


def qdiscs(ns: "Netns") -> list[tuple[int, str, int]]:
    """(ifindex, kind, frames queued) of every qdisc in the namespace."""
    out = []
    for data, start, end in request(ns, RTM_GETQDISC, NLM_F_DUMP, TCMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
        ifindex = TCMSG.unpack_from(data, start)[1]
        attrs = attributes(data, start + TCMSG.size, end)
        stats = attrs.get(TCA_STATS, b"")
        qlen = TC_STATS.unpack_from(stats)[6] if len(stats) >= TC_STATS.size else 0
        out.append((ifindex, attrs.get(TCA_KIND, b"").rstrip(b"\0").decode(), qlen))
    return out


def _link(ns: "Netns", ifindex: int) -> dict[int, bytes]:
    for data, start, end in request(ns, RTM_GETLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0)):
        return attributes(data, start + IFINFOMSG.size, end)
    raise RtnlError(19, f"no interface with ifindex {ifindex} in {ns.name}")


def link_xdp(ns: "Netns", ifindex: int) -> tuple[int, int]:
    """(IFLA_XDP_ATTACHED: 0 none, 1 drv, 2 skb, 3 hw, 4 several; IFLA_XDP_PROG_ID) of an interface."""
    xdp = _link(ns, ifindex).get(IFLA_XDP)
    if xdp is None:
        return 0, 0
    inner = attributes(xdp, 0, len(xdp))
    attached = inner.get(IFLA_XDP_ATTACHED, b"\0")[0]
    prog = struct.unpack("=I", inner[IFLA_XDP_PROG_ID])[0] if len(inner.get(IFLA_XDP_PROG_ID, b"")) == 4 else 0
    return attached, prog


def link_operstate(ns: "Netns", ifindex: int) -> str:
    """An interface's operational state as `ip link` names it (UP, DOWN, LOWERLAYERDOWN...)."""
    state = _link(ns, ifindex).get(IFLA_OPERSTATE, b"\0")[0]
    return OPERSTATES[state] if state < len(OPERSTATES) else str(state)
