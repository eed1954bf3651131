"""The rtnetlink requests the lab makes on every build, wait and check, done raw.

pyroute2 (`Netns.ipr`) is the lab's netlink handle for attaching programs, and yours; its
import costs ~60-100 ms in every process and its parsing about a millisecond a message,
which the lab would pay in its hot paths: building a lab (veth pairs, addresses, links up,
static neighbours: every `lab up` and every fresh test lab), reading an interface's XDP
state (preflight before every send, attach read-back, reports), the qdiscs of a namespace
(every wait for the kernel to finish, lab/settle.py), and the dumps that check a kept lab
(lab/inventory.py). Here those requests are packed and their answers parsed by hand: struct
nlmsghdr, ifinfomsg, ifaddrmsg, rtmsg, ndmsg, tcmsg and the attributes the lab uses
(include/uapi/linux/rtnetlink.h, if_link.h, neighbour.h, pkt_sched.h, veth.h). The kernel's
extended acknowledgement (NETLINK_EXT_ACK) gives a refusal's own words. A socket per
namespace, kept open with the Netns handle.
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
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_EXCL, NLM_F_CREATE = 1, 4, 0x300, 0x200, 0x400
NLM_F_ACK_TLVS = 0x200                      # in an error message: extended acknowledgement attributes follow
NLA_F_NESTED = 0x8000
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NLMSGERR_ATTR_MSG = 1
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR, RTM_GETROUTE = 16, 18, 20, 22, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH, RTM_GETRULE, RTM_GETQDISC = 28, 29, 30, 34, 38
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_TXQLEN = 1, 3, 4, 10, 13
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_NET_NS_FD, IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES, IFLA_XDP = 16, 18, 28, 31, 32, 43
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_XDP_FD, IFLA_XDP_FLAGS = 1, 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 1
NDA_DST, NDA_LLADDR = 1, 2
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")   # IF_OPER_*
IFLA_XDP_ATTACHED, IFLA_XDP_PROG_ID = 2, 4
TCA_KIND, TCA_STATS = 1, 3
TC_STATS = struct.Struct("=QIIIIII")        # struct tc_stats up to qlen (its 7th field)


class RtnlError(OSError):
    """The kernel answered a request with an error: errno, and the kernel's own message
    (extended acknowledgement) where it gave one, else strerror."""


def _messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, start of the body, end) of each message in one receive."""
    at = 0
    while at + NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSG.unpack_from(data, at)
        if length < NLMSG.size:
            return
        yield kind, at + NLMSG.size, at + length
        at += (length + 3) & ~3


def _ack_message(data: bytes, start: int, end: int) -> str | None:
    """The kernel's message in an error acknowledgement (NLMSGERR_ATTR_MSG), if it sent one:
    after the error code and the request's header (its body left out: NETLINK_CAP_ACK)."""
    if not NLMSG.unpack_from(data, start - NLMSG.size)[2] & NLM_F_ACK_TLVS:
        return None
    at = start + 4 + NLMSG.size
    msg = attributes(data, at, end).get(NLMSGERR_ATTR_MSG)
    return msg.rstrip(b"\0").decode(errors="replace") if msg else None


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute (struct rtattr, padded to 4 bytes)."""
    return RTA.pack(RTA.size + len(payload), kind) + payload + bytes(-len(payload) % 4)


def nest(kind: int, *parts: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def mac(kind: int, text: str) -> bytes:
    return attr(kind, bytes.fromhex(text.replace(":", "")))


def change(ns: "Netns", kind: int, body: bytes, flags: int = 0) -> None:
    """Send one request that changes something and wait for the kernel's acknowledgement;
    raises RtnlError with the kernel's reason."""
    for _ in request(ns, kind, NLM_F_ACK | flags, body):
        pass


class VethEnd(NamedTuple):
    """One end of a veth pair as add_veth makes it."""
    name: str
    mac: str
    mtu: int = 1500
    rx_queues: int = 1
    tx_queues: int = 1


def add_veth(ns: "Netns", a: VethEnd, b: VethEnd, peer_ns_fd: int) -> None:
    """`ip link add A type veth peer B netns ...`; the peer `b` is created directly in the
    namespace of `peer_ns_fd`."""
    def end(e: VethEnd) -> bytes:
        return (attr(IFLA_IFNAME, e.name.encode() + b"\0") + mac(IFLA_ADDRESS, e.mac) + u32(IFLA_MTU, e.mtu)
                + u32(IFLA_NUM_TX_QUEUES, e.tx_queues) + u32(IFLA_NUM_RX_QUEUES, e.rx_queues))
    peer = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + end(b) + u32(IFLA_NET_NS_FD, peer_ns_fd)
    body = (IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + end(a)
            + nest(IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"veth"), nest(IFLA_INFO_DATA, nest(VETH_INFO_PEER, peer))))
    change(ns, RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL)


def link_index(ns: "Netns", name: str) -> int:
    """The ifindex of interface `name` in the namespace (RtnlError ENODEV if there is none)."""
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr(IFLA_IFNAME, name.encode() + b"\0")
    for data, start, _end in request(ns, RTM_GETLINK, 0, body):
        return int(IFINFOMSG.unpack_from(data, start)[2])
    raise RtnlError(19, f"no interface {name} in {ns.name}")


def link_up(ns: "Netns", ifindex: int) -> None:
    """`ip link set IF up`."""
    change(ns, RTM_NEWLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, IFF_UP, IFF_UP))


def add_address(ns: "Netns", ifindex: int, ip: str, prefixlen: int) -> None:
    """`ip addr add IP/PREFIXLEN dev IF` (IPv4; no broadcast address, as pyroute2 adds it)."""
    packed = socket.inet_aton(ip)
    body = (IFADDRMSG.pack(socket.AF_INET, prefixlen, 0, 0, ifindex) + attr(IFA_LOCAL, packed)
            + attr(IFA_ADDRESS, packed))
    change(ns, RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_EXCL)


def add_neighbour(ns: "Netns", ifindex: int, ip: str, lladdr: str) -> None:
    """`ip neigh add IP lladdr MAC dev IF` (permanent)."""
    body = NDMSG.pack(socket.AF_INET, ifindex, NUD_PERMANENT, 0, 0) + attr(NDA_DST, socket.inet_aton(ip)) \
        + mac(NDA_LLADDR, lladdr)
    change(ns, RTM_NEWNEIGH, body, NLM_F_CREATE | NLM_F_EXCL)


def set_xdp(ns: "Netns", ifindex: int, fd: int, flags: int) -> None:
    """Attach program `fd` to an interface in the mode of `flags` (XDP_FLAGS_*), or detach
    with fd -1 (`ip link set IF xdp off`)."""
    xdp = nest(IFLA_XDP, attr(IFLA_XDP_FD, struct.pack("=i", fd)), u32(IFLA_XDP_FLAGS, flags))
    change(ns, RTM_NEWLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0) + xdp)


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
                    raise RtnlError(err, _ack_message(data, start, end) or os.strerror(err))
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
         ) -> list[tuple[tuple[int, ...], dict[int, bytes]]]:
    """(the fixed header's fields, the attributes) of every object a dump request returns:
    links (RTM_GETLINK, IFINFOMSG), addresses (RTM_GETADDR, IFADDRMSG), routes (RTM_GETROUTE,
    RTMSG), rules (RTM_GETRULE, RTMSG), neighbours (RTM_GETNEIGH, NDMSG). Read to its end:
    a dump left half-read keeps running on the namespace's socket, and the kernel refuses
    the next dump there (EBUSY)."""
    body = bytes([family]) + bytes(header.size - 1)
    return [(header.unpack_from(data, start), attributes(data, start + header.size, end))
            for data, start, end in request(ns, kind, NLM_F_DUMP, body)]


def delete_neighbour(ns: "Netns", family: int, ifindex: int, dst: bytes) -> None:
    """Remove one neighbour entry (RTM_DELNEIGH), as `ip neigh del` does."""
    change(ns, RTM_DELNEIGH, NDMSG.pack(family, ifindex, 0, 0, 0) + attr(NDA_DST, dst))


def _link(ns: "Netns", ifindex: int) -> dict[int, bytes]:
    for data, start, end in request(ns, RTM_GETLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0)):
        return attributes(data, start + IFINFOMSG.size, end)
    raise RtnlError(19, f"no interface with ifindex {ifindex} in {ns.name}")


def xdp_of(link: dict[int, bytes]) -> tuple[int, int]:
    """(IFLA_XDP_ATTACHED: 0 none, 1 drv, 2 skb, 3 hw, 4 several; IFLA_XDP_PROG_ID) of a link's attributes."""
    xdp = link.get(IFLA_XDP)
    if xdp is None:
        return 0, 0
    inner = attributes(xdp, 0, len(xdp))
    attached = inner.get(IFLA_XDP_ATTACHED, b"\0")[0]
    prog = struct.unpack("=I", inner[IFLA_XDP_PROG_ID])[0] if len(inner.get(IFLA_XDP_PROG_ID, b"")) == 4 else 0
    return attached, prog


def link_xdp(ns: "Netns", ifindex: int) -> tuple[int, int]:
    """xdp_of an interface."""
    return xdp_of(_link(ns, ifindex))


def link_operstate(ns: "Netns", ifindex: int) -> str:
    """An interface's operational state as `ip link` names it (UP, DOWN, LOWERLAYERDOWN...)."""
    state = _link(ns, ifindex).get(IFLA_OPERSTATE, b"\0")[0]
    return OPERSTATES[state] if state < len(OPERSTATES) else str(state)
