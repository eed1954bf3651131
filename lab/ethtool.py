"""ethtool's ioctls (SIOCETHTOOL) on a socket of the interface's namespace: `ethtool -S`
statistics, the GRO switch and the offload features (`ethtool -k`), without running ethtool."""
from __future__ import annotations

import ctypes
import fcntl
import socket
import struct
from typing import TYPE_CHECKING

from .errors import LinkError

if TYPE_CHECKING:
    from .built import Interface

SIOCETHTOOL = 0x8946
ETHTOOL_GSTRINGS, ETHTOOL_GSTATS, ETHTOOL_GSSET_INFO = 0x1B, 0x1D, 0x37
ETHTOOL_GGRO, ETHTOOL_SGRO, ETHTOOL_GFEATURES = 0x2B, 0x2C, 0x3A
ETH_SS_STATS, ETH_SS_FEATURES = 1, 4
FEATURE_WORDS = 4           # blocks of 32 features asked for; the kernel fills those it has
FEATURE_BLOCK = struct.Struct("IIII")   # struct ethtool_get_features_block: available, requested, active, never_changed
ETH_GSTRING_LEN = 32
NOT_COUNTERS = {"peer_ifindex"}   # veth's ethtool -S reports its peer's ifindex among stats


def _ifreq(name: str, data: "ctypes.Array[ctypes.c_char]") -> bytes:
    return struct.pack("16sP", name.encode(), ctypes.addressof(data))


def _strings(sock: socket.socket, name: str, sset: int) -> list[str]:
    """The names of string set `sset` of interface `name` (ETHTOOL_GSTRINGS); [] when it has none."""
    info = ctypes.create_string_buffer(struct.pack("IIQI", ETHTOOL_GSSET_INFO, 0, 1 << sset, 0))
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, _ifreq(name, info))
    except OSError:
        return []
    n = struct.unpack_from("I", info.raw, 16)[0]
    if n == 0:
        return []
    strings = ctypes.create_string_buffer(struct.pack("III", ETHTOOL_GSTRINGS, sset, n) + bytes(n * ETH_GSTRING_LEN))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, _ifreq(name, strings))
    return [strings.raw[12 + i * ETH_GSTRING_LEN:12 + (i + 1) * ETH_GSTRING_LEN].split(b"\0")[0].decode()
            for i in range(n)]


def ethtool_stats(iface: "Interface") -> dict[str, int]:
    """`ethtool -S <if>` in the interface's namespace; {} when the driver has none."""
    sock = iface.ns.kept_socket(socket.AF_INET, socket.SOCK_DGRAM)
    names = _strings(sock, iface.name, ETH_SS_STATS)
    if not names:
        return {}
    stats = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_GSTATS, len(names)) + bytes(8 * len(names)))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, _ifreq(iface.name, stats))
    values = struct.unpack_from(f"{len(names)}Q", stats.raw, 8)
    return {k: v for k, v in zip(names, values) if k not in NOT_COUNTERS}


def feature_bits(sock: socket.socket, name: str) -> tuple[int, int]:
    """(requested, active) offload features of interface `name` as bit masks (feature i is
    bit i, named by feature_names), over `sock`, a socket of its namespace."""
    buf = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_GFEATURES, FEATURE_WORDS) +
                                      bytes(FEATURE_WORDS * FEATURE_BLOCK.size))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, _ifreq(name, buf))
    words = min(struct.unpack_from("I", buf.raw, 4)[0], FEATURE_WORDS)
    requested = active = 0
    for i in range(words):
        _available, req, act, _never = FEATURE_BLOCK.unpack_from(buf.raw, 8 + i * FEATURE_BLOCK.size)
        requested |= req << (32 * i)
        active |= act << (32 * i)
    return requested, active


def feature_names(sock: socket.socket, name: str, bits: int) -> list[str]:
    """The names of the features set in `bits` (`ethtool -k`'s: rx-vlan-hw-parse, rx-gro...)."""
    names = _strings(sock, name, ETH_SS_FEATURES)
    return [names[i] if i < len(names) else f"feature {i}" for i in range(bits.bit_length()) if bits >> i & 1]




def _value_ioctl(iface: "Interface", cmd: int, data: int = 0) -> int:
    sock = iface.ns.kept_socket(socket.AF_INET, socket.SOCK_DGRAM)
    buf = ctypes.create_string_buffer(struct.pack("II", cmd, data))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, _ifreq(iface.name, buf))
    return int(struct.unpack_from("II", buf.raw)[1])


def gro(iface: "Interface") -> bool:
    """Whether GRO is on (`ethtool -k IF | grep generic-receive-offload`)."""
    return bool(_value_ioctl(iface, ETHTOOL_GGRO))


def set_gro(iface: "Interface", on: bool) -> None:
    """`ethtool -K IF gro on|off`."""
    try:
        _value_ioctl(iface, ETHTOOL_SGRO, int(on))
    except OSError as err:
        raise LinkError(f"turn GRO {'on' if on else 'off'} on {iface.key}", err.strerror or str(err),
                        "check `ethtool -k` in the namespace", errno=err.errno) from None


def set_gro_for_test(iface: "Interface", on: bool) -> None:
    """`ethtool -K IF gro on|off` until the lab's test ends (Lab.on_close): then put back as
    it was (GRO is on by default on a veth before 5.13, off after)."""
    was = gro(iface)
    set_gro(iface, on)
    iface.lab.on_close(f"turn GRO {'on' if was else 'off'} again on {iface.key}",
                       lambda: None if iface.ns.closed else set_gro(iface, was))
