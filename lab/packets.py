"""Frame builders (keyword-only, with defaults, in the manner of PTF's simple_*_packet) and masks.

Builders return scapy packets; `bytes(frame)` is what goes on the wire. A `Mask` compares
received bytes with an expected frame, ignoring the fields marked don't-care.
"""
from __future__ import annotations

from typing import Any

from .errors import PacketError

Packet = Any
"""A scapy packet (scapy is untyped: what the builders return, and what bytes() sends)."""

_layers: Any = None     # the scapy layer classes (scapy is untyped)


def _scapy() -> Any:          # Any: a namespace of scapy's layer classes (untyped)
    """The scapy layers the lab uses, imported once and lazily (`scapy.all` takes 0.4 s to
    import, these 0.1 s: it counts once per xdist worker)."""
    global _layers
    if _layers is None:
        from types import SimpleNamespace

        from scapy.config import conf
        from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption
        from scapy.layers.inet6 import IPv6
        from scapy.layers.l2 import ARP, Dot1Q, Ether
        from scapy.packet import Raw
        for layer in (UDP, TCP):        # ports as numbers in summaries, not /etc/services names
            for name in ("sport", "dport"):
                conf.noenum.add(next(f for f in layer.fields_desc if f.name == name))
        _layers = SimpleNamespace(Ether=Ether, Dot1Q=Dot1Q, ARP=ARP, IP=IP, IPOption=IPOption, UDP=UDP, TCP=TCP,
                                  ICMP=ICMP, IPv6=IPv6, Raw=Raw)
    return _layers


def udp_frame(*, eth_dst: str = "02:00:00:00:01:01", eth_src: str = "02:00:00:00:01:02",
              ip_src: str = "192.168.1.2", ip_dst: str = "192.168.0.1", ttl: int = 64, ip_id: int = 1,
              sport: int = 1234, dport: int = 5678, payload: bytes = b"xdplab-payload", ihl: int | None = None,
              options: bytes = b"") -> Packet:
    """Ethernet / IPv4 / UDP / payload (no padding: the frame is exactly as long as its parts)."""
    s = _scapy()
    ip = s.IP(src=ip_src, dst=ip_dst, ttl=ttl, id=ip_id, flags="DF")
    if options:
        ip.options = [s.IPOption(options)]
    if ihl is not None:
        ip.ihl = ihl
    return s.Ether(dst=eth_dst, src=eth_src) / ip / s.UDP(sport=sport, dport=dport) / s.Raw(payload)


def udp_bytes(*, eth_dst: str = "02:00:00:00:01:01", eth_src: str = "02:00:00:00:01:02",
              ip_src: str = "192.168.1.2", ip_dst: str = "192.168.0.1", ttl: int = 64, ip_id: int = 1,
              sport: int = 1234, dport: int = 5678, payload: bytes = b"xdplab-payload", options: bytes = b"") -> bytes:
    """bytes(udp_frame(...)) for the same arguments, built without scapy (~100 times faster:
    what a fuzz run draws hundreds of; tests/test_units.py holds it to scapy's bytes)."""
    import ipaddress
    import struct
    src, dst = ipaddress.IPv4Address(ip_src).packed, ipaddress.IPv4Address(ip_dst).packed
    options += b"\0" * (-len(options) % 4)
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | (5 + len(options) // 4), 0, 20 + len(options) + udp_len, ip_id,
                         0x4000, ttl, 17, 0, src, dst) + options
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    eth = bytes.fromhex(eth_dst.replace(":", "")) + bytes.fromhex(eth_src.replace(":", "")) + b"\x08\x00"
    return eth + header + udp


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def arp_request(*, eth_src: str = "02:00:00:00:01:02", ip_src: str = "192.168.1.2",
                ip_dst: str = "192.168.1.1") -> Packet:
    """A broadcast ARP who-has."""
    s = _scapy()
    return s.Ether(dst="ff:ff:ff:ff:ff:ff", src=eth_src) / s.ARP(op=1, hwsrc=eth_src, psrc=ip_src, pdst=ip_dst)


def ipv6_udp_frame(*, eth_dst: str = "02:00:00:00:01:01", eth_src: str = "02:00:00:00:01:02",
                   ip_src: str = "fd00::2", ip_dst: str = "fd00::1", payload: bytes = b"xdplab-v6") -> Packet:
    s = _scapy()
    return s.Ether(dst=eth_dst, src=eth_src) / s.IPv6(src=ip_src, dst=ip_dst) / s.UDP(sport=1234, dport=5678) / \
        s.Raw(payload)


def rewrite(frame: Packet, **fields: Any) -> Packet:      # fields: scapy field values
    """A copy of `frame` with fields changed, e.g. rewrite(f, eth_dst="00:00:11:22:33:44")."""
    s = _scapy()
    out = frame.copy()
    for name, value in fields.items():
        layer, _, attr = name.partition("_")
        cls = {"eth": s.Ether, "ip": s.IP}.get(layer)
        if cls is None or cls not in out:
            raise PacketError(f"rewrite field {name}", "unknown layer prefix or layer not in frame",
                              "use eth_dst, eth_src, ip_src, ip_dst, ip_ttl ...")
        setattr(out[cls], attr, value)
    return out


def summary(raw: bytes) -> str:
    """One line that a person can read, from the bytes of a frame: MACs, then the rest."""
    s = _scapy()
    if len(raw) < 14:
        return f"runt, {len(raw)} bytes"
    try:
        eth = s.Ether(raw)
        return f"{eth.src} > {eth.dst} {eth.payload.summary()}"
    except Exception:  # noqa: BLE001 - a frame scapy cannot dissect is still shown as hex
        return f"{len(raw)} bytes"


def field_diff(expected: bytes, received: bytes, limit: int = 8) -> list[str]:
    """The header fields in which two frames differ, "Layer.field: expected X, received Y"."""
    s = _scapy()
    out = []
    if len(expected) != len(received):
        out.append(f"length: expected {len(expected)}, received {len(received)}")
    a, b = s.Ether(expected), s.Ether(received)
    while a and b and type(a) is type(b) and not isinstance(a, s.Raw):
        for f in a.fields_desc:
            va, vb = a.getfieldval(f.name), b.getfieldval(f.name)
            if va != vb:
                out.append(f"{type(a).__name__}.{f.name}: expected {va!r}, received {vb!r}")
        a, b = a.payload, b.payload
    if a and b and type(a) is not type(b):
        out.append(f"layer: expected {type(a).__name__}, received {type(b).__name__}")
    elif isinstance(a, s.Raw) and bytes(a) != bytes(b):
        out.append("payload differs")
    return out[:limit]


def hexdump(raw: bytes, width: int = 16) -> str:
    return "\n".join(f"  {i:04x}  " + " ".join(f"{b:02x}" for b in raw[i:i + width])
                     for i in range(0, len(raw), width))


class Mask:
    """An expected frame plus the bits that must match. Compare with `matches(raw)`."""

    def __init__(self, frame: Packet) -> None:
        self.frame = frame
        self.expected = bytes(frame)
        self.mask = bytearray(b"\xff" * len(self.expected))
        self.ignored: list[str] = []

    def dont_care(self, *fields: str) -> "Mask":
        """Ignore fields given as "Layer.field", e.g. "IP.ttl", "IP.chksum", "Ether.dst"."""
        s = _scapy()
        fixed = s.Ether(self.expected)   # every automatic field (checksums, lengths) now explicit
        for spec in fields:
            layer_name, _, fname = spec.partition(".")
            layer_cls = getattr(s, layer_name, None)
            if layer_cls is None or layer_cls not in fixed or not fname:
                raise PacketError(f"mask field {spec}", "no such layer in the frame",
                                  "name a layer of the expected frame, e.g. IP.ttl")
            layer = fixed[layer_cls]
            fld = next((f for f in layer.fields_desc if f.name == fname), None)
            if fld is None:
                raise PacketError(f"mask field {spec}", f"{layer_name} has no field {fname!r}",
                                  f"use one of {', '.join(f.name for f in layer.fields_desc)}")
            other = fixed.copy()
            value = getattr(layer, fname)
            if isinstance(value, int):
                bits = getattr(fld, "size", 0) if getattr(fld, "size", 0) and type(fld).__name__.startswith("Bit") \
                    else 8 * fld.sz
                setattr(other[layer_cls], fname, value ^ ((1 << bits) - 1))
            elif isinstance(value, str) and ":" in value:
                setattr(other[layer_cls], fname, ":".join(f"{int(b, 16) ^ 0xff:02x}" for b in value.split(":")))
            elif isinstance(value, str) and value.count(".") == 3:
                setattr(other[layer_cls], fname, ".".join(str(int(b) ^ 0xff) for b in value.split(".")))
            else:
                raise PacketError(f"mask field {spec}", f"field type {type(fld).__name__} is not supported",
                                  "mask integer, MAC or IPv4 fields")
            diff = bytes(other)
            for i, (a, b) in enumerate(zip(self.expected, diff)):
                self.mask[i] &= ~(a ^ b) & 0xFF
            self.ignored.append(spec)
        return self

    def matches(self, raw: bytes) -> bool:
        if len(raw) != len(self.expected):
            return False
        return all((a & m) == (b & m) for a, b, m in zip(raw, self.expected, self.mask))

    def __str__(self) -> str:
        ign = f" (ignoring {', '.join(self.ignored)})" if self.ignored else ""
        return f"{summary(self.expected)}, {len(self.expected)} bytes{ign}"


def as_mask(expected: "Packet | Mask | bytes") -> Mask:
    if isinstance(expected, Mask):
        return expected
    if isinstance(expected, (bytes, bytearray)):
        return Mask(_scapy().Ether(bytes(expected)))
    return Mask(expected)
