"""The seed notes' facts, in one place: their topology, the routed destination and MAC, and
the Go control plane's struct layouts (the one that broke the MAC rewrite, and the fix).

      net1                fwd                      net2
     veth1  ─────────  veth0 [l2fwd]   veth2  ─────────  veth3
   192.168.1.2        192.168.1.1   192.168.0.254     192.168.0.1 (00:00:11:22:33:44)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..maps import Layout
from ..packets import udp_frame
from ..topology import End, Topology, Veth

if TYPE_CHECKING:
    from ..built import Lab

SEED = Topology(
    name="seed",
    veths=(
        Veth(End("net1", "veth1", "02:00:00:00:01:02", "192.168.1.2/24"),
             End("fwd", "veth0", "02:00:00:00:01:01", "192.168.1.1/24")),
        Veth(End("fwd", "veth2", "02:00:00:00:00:fe", "192.168.0.254/24"),
             End("net2", "veth3", "00:00:11:22:33:44", "192.168.0.1/24")),
    ),
)
"""The seed notes' topology: l2fwd on fwd/veth0 forwards to fwd/veth2; veth3 owns
192.168.0.1 and the seed's MAC 00:00:11:22:33:44."""

ROUTED = "192.168.0.1"            # the destination the seed routes (net2/veth3's address)
SEED_MAC = "00:00:11:22:33:44"    # the destination MAC l2fwd_map rewrites to (veth3's own)
INGRESS, EGRESS = "fwd/veth0", "fwd/veth2"
SENDER, RECEIVER = "net1/veth1", "net2/veth3"

GO_SEED = Layout.c("go struct {Outif int; DstMac [6]byte}", [("Outif", "i64"), ("DstMac", "u8[6]")])
"""The seed's Go struct: a 64-bit int, so 16 bytes, of which the kernel keeps the map's 12."""
GO_FIXED = Layout.c("go struct {Outif uint32; DstMac [6]byte}", [("Outif", "u32"), ("DstMac", "u8[6]")])
"""The fix: uint32, laid out like the C struct fwd (12 bytes)."""


def go_seed_bytes(outif: int, mac: str = SEED_MAC) -> bytes:
    """The 12 bytes the kernel keeps of the seed's Go struct (outif, 4 zero bytes, 00 00 11 22)."""
    return GO_SEED.pack(Outif=outif, DstMac=bytes.fromhex(mac.replace(":", "")))[:12]


def seed_frame(lab: "Lab", ip_dst: str = ROUTED, **fields: Any) -> Any:   # Any: a scapy packet (scapy is untyped)
    """A UDP frame that net1 sends to fwd/veth0 (its next hop) for `ip_dst`; `fields` as for
    lab.packets.udp_frame (ttl, ihl, payload...)."""
    return udp_frame(eth_src=lab.iface(SENDER).mac, eth_dst=lab.iface(INGRESS).mac, ip_src="192.168.1.2",
                     ip_dst=ip_dst, **fields)
