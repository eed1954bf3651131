"""ethtool's ioctls (SIOCETHTOOL) on a socket of the interface's namespace: `ethtool -S`
statistics and the GRO switch, without running ethtool."""
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
ETHTOOL_GGRO, ETHTOOL_SGRO = 0x2B, 0x2C
ETH_SS_STATS = 1
ETH_GSTRING_LEN = 32
NOT_COUNTERS = {"peer_ifindex"}   # veth's ethtool -S reports its peer's ifindex among stats


def _ifreq(name: str, data: ctypes.Array) -> bytes:
    return struct.pack("16sP", name.encode(), ctypes.addressof(data))


def ethtool_stats(iface: "Interface") -> dict[str, int]:
    """`ethtool -S <if>` in the interface's namespace; {} when the driver has none."""
    sock = iface.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sset = ctypes.create_string_buffer(struct.pack("IIQI", ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_STATS, 0))
        try:
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, _ifreq(iface.name, sset))
        except OSError:
            return {}
        n = struct.unpack_from("I", sset.raw, 16)[0]
        if n == 0:
            return {}
        strings = ctypes.create_string_buffer(struct.pack("III", ETHTOOL_GSTRINGS, ETH_SS_STATS, n) +
                                              bytes(n * ETH_GSTRING_LEN))
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, _ifreq(iface.name, strings))
        stats = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_GSTATS, n) + bytes(8 * n))
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, _ifreq(iface.name, stats))
    finally:
        sock.close()
    names = [strings.raw[12 + i * ETH_GSTRING_LEN:12 + (i + 1) * ETH_GSTRING_LEN].split(b"\0")[0].decode()
             for i in range(n)]
    values = struct.unpack_from(f"{n}Q", stats.raw, 8)
    return {k: v for k, v in zip(names, values) if k not in NOT_COUNTERS}




def _value_ioctl(iface: "Interface", cmd: int, data: int = 0) -> int:
    sock = iface.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        buf = ctypes.create_string_buffer(struct.pack("II", cmd, data))
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, _ifreq(iface.name, buf))
        return struct.unpack_from("II", buf.raw)[1]
    finally:
        sock.close()


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
