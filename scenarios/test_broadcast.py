"""Devmap broadcast (BPF_F_BROADCAST), with and without the ingress port, and devmap entries
that carry a second program for the copies leaving through them.

      net1                         fwd                               net2, net3
  ┌────────────┐   ┌───────────────────────────────────┐   ┌──────────────────┐
  │ veth1      │───│ veth0 [xdp_bcast | xdp_bcast_ex]  │   │                  │
  │ (gets a    │   │ ports (devmap_hash): veth0,        │   │                  │
  │  copy back │   │   veth2 [egress: mark], veth4      │   │                  │
  │  unless    │   │   [egress: drop]                   │   │                  │
  │  excluded) │   │ veth2 ─────────────────────────────┼───│ net2/veth3       │
  └────────────┘   │ veth4 ─────────────────────────────┼───│ net3/veth5       │
                   └───────────────────────────────────┘   └──────────────────┘
  N frames from net1/veth1; in drv mode every receiving end runs an XDP pass program (a
  veth takes redirected frames only while its peer runs NAPI). No end has an address and
  the frames keep veth0's MAC as destination: each receiving stack drops its copies as
  not for this host (kfree_skb OTHERHOST), which is how the scenario sees them arrive.

What the kernel did (Linux 6.18):

| mode | program | copies | counters | what the kernel said |
|---|---|---|---|---|
| skb | xdp_bcast | N to each of veth3, veth5 and back to veth1 | each port's tx, its peer's rx | the three stacks' OTHERHOST drops only (generic broadcast transmits skb clones) |
| skb | xdp_bcast_ex | N to veth3 and veth5 | as above, nothing back | as above, without net1 |
| drv | xdp_bcast | N to each port, veth0 included | veth0 `rx_queue_0_xdp_redirect` +N (once); each port `tx_queue_0_xdp_xmit` +N | `xdp_devmap_xmit -> port` ×N per port |
| drv | xdp_bcast_ex | N to veth3 and veth5 | as above without veth0 | as above without veth0 |
| skb | xdp_bcast_ex, egress mark/drop | N to veth3 (source MAC 02:00:00:00:00:<veth2's ifindex>), none to veth5 | nothing on veth4/veth5 | fwd/veth0 `kfree_skb NOT_SPECIFIED` ×N (the dropped clones) |
| drv | xdp_bcast_ex, egress mark/drop | as above | nothing on veth4/veth5 | `xdp_devmap_xmit drops -> fwd/veth4` ×N: the egress program's drops are counted as the transmit's |

Before 5.14 (5.10) there is no broadcast, probed from the kernel's symbols
(dev_map_enqueue_multi): bpf_redirect_map() with BPF_F_BROADCAST returns XDP_ABORTED, and
every frame ends there (`xdp_exception XDP_ABORTED`, drv: `rx_queue_0_xdp_drops`). And
from 5.8 to 5.14 generic XDP refuses to attach a program whose devmap entries can carry a
program (8-byte values; probed: dev_map_can_have_prog): the skb rows do not exist there.
"""  # noqa: E501 - the table of what the kernel did, a row a line
from __future__ import annotations

import struct

import pytest

from lab.counters import assert_counters, merge, redirected, veth_hop
from lab.fates import assert_fates, fates_before
from lab.features import devmap_broadcast
from lab.packets import rewrite, udp_frame
from lab.peers import set_up_peers
from lab.plugin import attach_where_allowed
from lab.programs import PACKAGE_BPF, Program
from lab.topology import End, Topology, Veth

N = 50
BROADCAST = Program(PACKAGE_BPF / "broadcast.bpf.o")
DUMMY = Program(PACKAGE_BPF / "ring.bpf.o", "xdp_dummy")
TOPOLOGY = Topology((Veth(End("net1", "veth1", "02:00:00:00:01:02"), End("fwd", "veth0", "02:00:00:00:01:01")),
                     Veth(End("fwd", "veth2", "02:00:00:00:02:01"), End("net2", "veth3", "02:00:00:00:02:02")),
                     Veth(End("fwd", "veth4", "02:00:00:00:03:01"), End("net3", "veth5", "02:00:00:00:03:02"))),
                    name="broadcast")
PORTS = {"fwd/veth0": "net1/veth1", "fwd/veth2": "net2/veth3", "fwd/veth4": "net3/veth5"}   # port -> its peer


@pytest.fixture
def lab_topology():
    return TOPOLOGY


@pytest.fixture
def ports(lab, xdp_program, xdp_mode):
    """Every port in the devmap, and in drv mode an XDP program on every receiving end."""
    if xdp_mode == "drv":
        lab.on_close("undo the ports' peers", set_up_peers(lab, lab.iface("fwd/veth0"), "pass"))
        xdp_program(DUMMY).attach(lab.iface("net1/veth1"), "drv")

    def fill(prog, egress: dict[str, str] | None = None) -> None:
        m = prog.map("ports")
        for key in PORTS:
            iface = lab.iface(key)
            fd = xdp_program(BROADCAST, egress[key]).fd if egress and key in egress else 0
            with iface.ns.entered():      # a devmap's ifindex is resolved in the writer's namespace
                m.update(struct.pack("<I", iface.ifindex), struct.pack("<Ii", iface.ifindex, fd))
    return fill


def sent_and_copies(mode: str, length: int, to: list[str]) -> dict:
    """The counters of N frames from net1/veth1 broadcast out of the ports in `to`."""
    c = veth_hop(mode, N, N * length)
    if mode == "drv":
        c["fwd/veth0"]["rx_queue_0_xdp_redirect"] = N
    return merge(c, *(redirected(mode, N, N * length, port, PORTS[port]) for port in to))


def aborted_without_broadcast(lab, mode: str, frame, caps, before, fates) -> bool:
    """Before 5.14, BPF_F_BROADCAST makes bpf_redirect_map() return XDP_ABORTED: check that
    every frame ended there, and say whether that was the case to check."""
    if devmap_broadcast():
        return False
    for cap in caps.values():
        cap.expect_none()
    assert_counters(before, veth_hop(mode, N, N * len(bytes(frame)),
                                     **({"rx_queue_0_xdp_drops": N} if mode == "drv" else {})))
    assert_fates(fates, {"fwd/veth0": {"xdp_exception XDP_ABORTED": N, "kfree_skb NOT_SPECIFIED": N}})
    return True


@pytest.mark.parametrize("exclude", [False, True], ids=["with-ingress", "exclude-ingress"])
def test_broadcast_reaches_every_port(lab, xdp_program, xdp_mode, ports, exclude):
    bcast = xdp_program(BROADCAST, "xdp_bcast_ex" if exclude else "xdp_bcast")
    ports(bcast)
    attach_where_allowed(bcast, lab.iface("fwd/veth0"), xdp_mode)
    frame = udp_frame(eth_src=lab.iface("net1/veth1").mac, eth_dst=lab.iface("fwd/veth0").mac)
    caps = {peer: lab.capture(peer) for peer in PORTS.values()}
    before, fates = lab.snapshot(), fates_before(lab)

    lab.port("net1/veth1").send(frame, count=N)

    if aborted_without_broadcast(lab, xdp_mode, frame, caps, before, fates):
        return
    to = [p for p in PORTS if not (exclude and p == "fwd/veth0")]
    for port, peer in PORTS.items():
        if port in to:
            assert len(caps[peer].expect(frame, count=N)) == N, f"a copy of every frame out of {port}"
        caps[peer].expect_no_other()
    assert_counters(before, sent_and_copies(xdp_mode, len(bytes(frame)), to))
    said: dict[str, dict[str, int]] = {PORTS[p]: {"kfree_skb OTHERHOST": N} for p in to}
    if xdp_mode == "drv":
        said["fwd/veth0"] = {f"xdp_devmap_xmit -> {p}": N for p in to}
    assert_fates(fates, said)


def test_egress_programs_rewrite_or_drop_the_copies(lab, xdp_program, xdp_mode, ports):
    bcast = xdp_program(BROADCAST, "xdp_bcast_ex")
    ports(bcast, {"fwd/veth2": "xdp_egress_mark", "fwd/veth4": "xdp_egress_drop"})
    attach_where_allowed(bcast, lab.iface("fwd/veth0"), xdp_mode)
    veth2 = lab.iface("fwd/veth2")
    frame = udp_frame(eth_src=lab.iface("net1/veth1").mac, eth_dst=lab.iface("fwd/veth0").mac)
    marked = rewrite(frame, eth_src=f"02:00:00:00:00:{veth2.ifindex:02x}")
    caps = {peer: lab.capture(peer) for peer in ("net2/veth3", "net3/veth5")}
    before, fates = lab.snapshot(), fates_before(lab)

    lab.port("net1/veth1").send(frame, count=N)

    if aborted_without_broadcast(lab, xdp_mode, frame, caps, before, fates):
        return
    assert len(caps["net2/veth3"].expect(marked, count=N)) == N, "xdp_egress_mark wrote veth2's ifindex"
    caps["net2/veth3"].expect_no_other()
    caps["net3/veth5"].expect_none()
    assert_counters(before, sent_and_copies(xdp_mode, len(bytes(frame)), ["fwd/veth2"]))
    said = {"net2/veth3": {"kfree_skb OTHERHOST": N}}
    if xdp_mode == "drv":
        said["fwd/veth0"] = {"xdp_devmap_xmit -> fwd/veth2": N, "xdp_devmap_xmit drops -> fwd/veth4": N}
    else:
        said["fwd/veth0"] = {"kfree_skb NOT_SPECIFIED": N}
    assert_fates(fates, said)
