"""The XDP features a device reports (netdev generic netlink family, kernel >= 6.3), and
whether a device can take frames that XDP redirects to it.

A veth advertises NETDEV_XDP_ACT_NDO_XMIT only while its peer runs NAPI, which an XDP
program on the peer, or GRO on the peer (since 5.13), turns on (drivers/net/veth.c,
veth_set_xdp_features). Without it, a native-mode redirect into the veth fails and the
frames vanish. Kernels without the netdev family get the same answer from the peer's state.
"""
from __future__ import annotations

import itertools
import socket
import struct
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import ethtool, xdp

if TYPE_CHECKING:
    from .built import Interface, Lab

NETLINK_GENERIC = 16
GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 0x10, 3, 1, 2
NETDEV_CMD_DEV_GET, NETDEV_A_DEV_IFINDEX, NETDEV_A_DEV_XDP_FEATURES = 1, 1, 3
NLM_F_REQUEST, NLMSG_ERROR = 1, 2

XDP_ACT = {1: "basic", 2: "redirect", 4: "ndo-xmit", 8: "xsk-zerocopy", 16: "hw-offload", 32: "rx-sg",
           64: "ndo-xmit-sg"}
NDO_XMIT = 4


def _attr(kind: int, payload: bytes) -> bytes:
    a = struct.pack("HH", 4 + len(payload), kind) + payload
    return a + b"\0" * (-len(a) % 4)


def _attrs(data: bytes) -> dict[int, bytes]:
    out, off = {}, 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("HH", data, off)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[off + 4:off + length]
        off += (length + 3) & ~3
    return out


_seq = itertools.count(1)


def _request(sock: socket.socket, family: int, cmd: int, attrs: bytes) -> dict[int, bytes] | None:
    """One generic netlink request and its answer; on a kept socket an answer left unread by
    an interrupted earlier request is passed over (its sequence number is not this one's)."""
    seq = next(_seq) & 0xFFFFFFFF
    body = struct.pack("BBH", cmd, 1, 0) + attrs
    sock.send(struct.pack("IHHII", 16 + len(body), family, NLM_F_REQUEST, seq, 0) + body)
    while True:
        data = sock.recv(65536)
        if struct.unpack_from("I", data, 8)[0] == seq:
            break
    length, mtype = struct.unpack_from("IH", data)
    if mtype == NLMSG_ERROR:
        (err,) = struct.unpack_from("i", data, 16)
        if err:
            return None
    return _attrs(data[20:length])


def xdp_features(iface: "Interface") -> set[str] | None:
    """The device's XDP features ("basic", "redirect", "ndo-xmit", ...), or None when the
    kernel does not report them (no netdev generic netlink family)."""
    sock = iface.ns.kept_socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    if "netdev" not in _families:       # generic netlink families are the kernel's, not a namespace's
        fam = _request(sock, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, _attr(CTRL_ATTR_FAMILY_NAME, b"netdev\0"))
        _families["netdev"] = (struct.unpack("H", fam[CTRL_ATTR_FAMILY_ID][:2])[0]
                               if fam is not None and CTRL_ATTR_FAMILY_ID in fam else None)
    family = _families["netdev"]
    if family is None:
        return None
    dev = _request(sock, family, NETDEV_CMD_DEV_GET, _attr(NETDEV_A_DEV_IFINDEX, struct.pack("I", iface.ifindex)))
    if not dev or NETDEV_A_DEV_XDP_FEATURES not in dev:
        return None
    (bits,) = struct.unpack("Q", dev[NETDEV_A_DEV_XDP_FEATURES][:8])
    return {name for bit, name in XDP_ACT.items() if bits & bit}


_families: dict[str, int | None] = {}


_symbols: dict[str, bool] = {}


def kernel_symbol(name: str) -> bool:
    """Is `name` a function of the running kernel or of a loaded module (/proc/kallsyms)?
    A probe for features that arrived with a function of their own; unknown counts as yes."""
    global _kallsyms
    if name not in _symbols:
        if _kallsyms is None:
            try:
                with open("/proc/kallsyms", "rb") as f:      # ~5 MB, read once: scanning it line by
                    _kallsyms = f.read()                    # line took ~100 ms per name asked
            except OSError:
                _kallsyms = b""
        # "<address> <type> <name>\n", or "<address> <type> <name>\t[<module>]\n"
        found = f" {name}\n".encode() in _kallsyms or f" {name}\t".encode() in _kallsyms
        _symbols[name] = found or not _kallsyms
    return _symbols[name]


_kallsyms: bytes | None = None


def veth_gro_napi() -> bool:
    """Does GRO on a veth turn on its NAPI, so that it takes redirected XDP frames without an
    XDP program of its own (Linux 5.13, "veth: allow enabling NAPI even without XDP")? That
    change gave veth an ndo_set_features, veth_set_features: 5.10 lacks it, 6.1, 6.12 and
    6.18 have it. veth may be a module nobody loaded yet (a fresh VM, before the first veth):
    load it first, as making a veth would, or the probe would answer for a kernel without veth."""
    if not kernel_symbol("veth_xmit"):
        subprocess.run(["modprobe", "-q", "veth"], check=False, capture_output=True)
        global _kallsyms
        _kallsyms = None            # the module's symbols are there now
        _symbols.pop("veth_xmit", None)
        _symbols.pop("veth_set_features", None)
    return kernel_symbol("veth_set_features")


def generic_refuses_map_programs() -> bool:
    """Does generic (skb) XDP refuse a program that uses a devmap or cpumap whose entries can
    carry a program of their own (values larger than 4 bytes)? From 5.8 to 5.14 it does, with
    EINVAL and no message (generic_xdp_install, through dev_map_can_have_prog)."""
    return kernel_symbol("dev_map_can_have_prog")


def generic_cpumap() -> bool:
    """Can generic (skb) XDP redirect into a cpumap (Linux 5.15, cpu_map_generic_redirect)?
    Before, the redirect fails with EBADRQC whatever the map's values ("TODO: Handle
    BPF_MAP_TYPE_CPUMAP" in xdp_do_generic_redirect_map)."""
    return kernel_symbol("cpu_map_generic_redirect")


def cpumap_skb_batch_bug() -> bool:
    """Does a cpumap entry's program, run on skbs (generic XDP redirected them), skip the rest
    of the kthread's batch (up to 8) after the first skb it drops or redirects? From 5.15
    cpu_map_bpf_prog_run_skb(rcpu, listp, stats) returned from its loop there, and the rest of
    the batch went up the stack unseen; the skb path rewritten to take an array, (rcpu, skbs,
    skb_n, stats), runs the program on every skb. Probed from the function's parameters in the
    BTF; where the kernel inlined it (Debian's 6.1) the list form is assumed, as every kernel
    before the rewrite has it."""
    from .btf import kernel_function_params
    return generic_cpumap() and \
        kernel_function_params("cpu_map_bpf_prog_run_skb") != ["rcpu", "skbs", "skb_n", "stats"]


def devmap_broadcast() -> bool:
    """Does bpf_redirect_map() take BPF_F_BROADCAST (Linux 5.14)? It came with
    dev_map_enqueue_multi; before it, a flag above XDP_TX makes the helper return XDP_ABORTED."""
    return kernel_symbol("dev_map_enqueue_multi")


@dataclass(frozen=True)
class Readiness:
    """Whether `target` can receive XDP-redirected frames in `mode`, and why."""
    target: str
    mode: str
    ready: bool
    why: str

    def __str__(self) -> str:
        return f"{self.target} in {self.mode} mode: {'ready' if self.ready else 'cannot receive'} ({self.why})"


def redirect_readiness(lab: "Lab", target: "Interface", mode: str) -> Readiness:
    """Can frames that a program in `mode` redirects to `target` get through?"""
    if mode == "skb":
        return Readiness(target.key, mode, True, "generic XDP transmits redirected frames as skbs")
    from .errors import LabError
    try:
        peer = lab.peer(target.key)
    except LabError:                 # a namespace the lab did not make: the peer may be elsewhere
        peer = None
    peer_xdp, peer_gro = (xdp.query(peer), ethtool.gro(peer)) if peer is not None else (None, False)
    if peer is not None:
        state = f"its peer {peer.key} has {peer_xdp} and GRO {'on' if peer_gro else 'off'}"
    else:
        state = "its peer is outside the namespaces looked at"
    features = xdp_features(target)
    if features is None and peer is None:
        return Readiness(target.key, mode, True, "the kernel reports no XDP features and the peer is not in view: "
                         "not checked")
    if features is not None:
        ok = "ndo-xmit" in features
        shown = ", ".join(sorted(features)) or "none"
        return Readiness(target.key, mode, ok, f"XDP features [{shown}]{'' if ok else ' lack ndo-xmit'}; {state}")
    if peer_xdp is not None and peer_xdp.mode is not None:
        return Readiness(target.key, mode, True, f"the kernel reports no XDP features; {state}")
    if peer_gro and not veth_gro_napi():
        return Readiness(target.key, mode, False, f"the kernel reports no XDP features; {state}, and GRO does not "
                         "turn on a veth's NAPI before Linux 5.13 (no veth_set_features in /proc/kallsyms)")
    return Readiness(target.key, mode, peer_gro, f"the kernel reports no XDP features; {state}")

