"""Frames the decision scenarios send, named, for both backends and the differential check
(not a test module). Addresses are the seed topology's: net1/veth1 (02:00:00:00:01:02,
192.168.1.2) sends to fwd/veth0 (02:00:00:00:01:01)."""
from __future__ import annotations

import random

from lab.packets import arp_request, ipv6_udp_frame, udp_bytes, udp_frame

SRC_MAC, DST_MAC = "02:00:00:00:01:02", "02:00:00:00:01:01"
ROUTED, UNROUTED = "192.168.0.1", "192.168.0.99"
NEW_MAC = "00:00:11:22:33:44"


def ipv4(dst: str = ROUTED, payload: bytes = b"xdplab-payload", options: bytes = b"") -> bytes:
    return udp_bytes(eth_src=SRC_MAC, eth_dst=DST_MAC, ip_src="192.168.1.2", ip_dst=dst, payload=payload,
                     options=options)


def vlan(dst: str = ROUTED) -> bytes:
    f = ipv4(dst)
    return f[:12] + b"\x81\x00\x00\x07" + f[12:]


def truncated() -> list[bytes]:
    """The routed frame cut inside its IPv4 header: 14 to 33 bytes."""
    whole = ipv4()
    return [whole[:n] for n in range(14, 34)]


def bad_header() -> list[bytes]:
    whole = ipv4()
    bad_ihl = bytes(udp_frame(eth_src=SRC_MAC, eth_dst=DST_MAC, ip_src="192.168.1.2", ip_dst=ROUTED, ihl=4))
    return [bad_ihl, whole[:14] + bytes([0x65]) + whole[15:]]


NAMED = {
    "routed": [ipv4()],
    "routed-with-options": [ipv4(options=b"\x01\x01\x01\x01")],
    "unrouted": [ipv4(UNROUTED)],
    "arp": [bytes(arp_request(eth_src=SRC_MAC, ip_src="192.168.1.2", ip_dst="192.168.1.1"))],
    "ipv6": [bytes(ipv6_udp_frame(eth_src=SRC_MAC, eth_dst=DST_MAC))],
    "vlan": [vlan()],
    "truncated": truncated(),
    "bad-header": bad_header(),
}


def random_frames(n: int, seed: int = 7) -> list[bytes]:
    """`n` frames from a seeded generator: routed, unrouted, truncated, corrupted, random."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.randrange(5)
        base = ipv4(rng.choice([ROUTED, UNROUTED, "192.168.0.2"]), payload=rng.randbytes(rng.randrange(40)))
        if kind == 0:
            out.append(base)
        elif kind == 1:
            out.append(base[:rng.randrange(14, len(base))])
        elif kind == 2:
            i = rng.randrange(12, min(len(base), 40))
            out.append(base[:i] + bytes([rng.randrange(256)]) + base[i + 1:])
        elif kind == 3:
            out.append(bytes.fromhex(DST_MAC.replace(":", "")) + rng.randbytes(rng.randrange(8, 100)))
        else:
            out.append(vlan(rng.choice([ROUTED, UNROUTED])))
    return out
