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
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .netns import Netns

NLMSG = struct.Struct("=IHHII")             # struct nlmsghdr
RTA = struct.Struct("=HH")                  # struct rtattr
IFINFOMSG = struct.Struct("=BxHiII")        # struct ifinfomsg
TCMSG = struct.Struct("=BxxxiIII")          # struct tcmsg
IFADDRMSG = struct.Struct("=BBBBI")         # struct ifaddrmsg
RTMSG = struct.Struct("=BBBBBBBBI")         # struct rtmsg (struct fib_rule_hdr has the same shape)
NDMSG = struct.Struct("=BxxxiHBB")          # struct ndmsg
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 1, 4, 0x300
RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE, RTM_DELNEIGH, RTM_GETNEIGH, RTM_GETRULE, RTM_GETQDISC = 18, 22, 26, 29, 30, 34, 38
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_TXQLEN = 1, 3, 4, 10, 13
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES, IFLA_XDP = 16, 18, 31, 32, 43
IFLA_INFO_KIND = 1
NDA_DST, NDA_LLADDR = 1, 2
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
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


class Qdisc(NamedTuple):
    ifindex: int
    kind: str
    qlen: int           # frames it holds now
    handle: int
    parent: int


def qdiscs(ns: "Netns") -> list[Qdisc]:
    """Every qdisc in the namespace."""
    out = []
    for data, start, end in request(ns, RTM_GETQDISC, NLM_F_DUMP, TCMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
        ifindex, handle, parent, _info = TCMSG.unpack_from(data, start)[1:]
        attrs = attributes(data, start + TCMSG.size, end)
        stats = attrs.get(TCA_STATS, b"")
        qlen = TC_STATS.unpack_from(stats)[6] if len(stats) >= TC_STATS.size else 0
        out.append(Qdisc(ifindex, attrs.get(TCA_KIND, b"").rstrip(b"\0").decode(), qlen, handle, parent))
    return out


def dump(ns: "Netns", kind: int, header: struct.Struct, family: int = socket.AF_UNSPEC
         ) -> Iterator[tuple[tuple[int, ...], dict[int, bytes]]]:
    """(the fixed header's fields, the attributes) of every object a dump request returns:
    links (RTM_GETLINK, IFINFOMSG), addresses (RTM_GETADDR, IFADDRMSG), routes (RTM_GETROUTE,
    RTMSG), rules (RTM_GETRULE, RTMSG), neighbours (RTM_GETNEIGH, NDMSG)."""
    body = bytes([family]) + bytes(header.size - 1)
    for data, start, end in request(ns, kind, NLM_F_DUMP, body):
        yield header.unpack_from(data, start), attributes(data, start + header.size, end)


def delete_neighbour(ns: "Netns", family: int, ifindex: int, dst: bytes) -> None:
    """Remove one neighbour entry (RTM_DELNEIGH), as `ip neigh del` does."""
    attr = RTA.pack(RTA.size + len(dst), NDA_DST) + dst + bytes(-len(dst) % 4)
    for _ in request(ns, RTM_DELNEIGH, NLM_F_ACK, NDMSG.pack(family, ifindex, 0, 0, 0) + attr):
        pass


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
