"""VLAN-tagged frames through XDP: what the program sees, what a capture sees, and what a
redirect keeps, per mode and per place the tag travels.

      net1                            fwd                                 net2
  ┌──────────────────────┐   ┌───────────────────────────────────┐   ┌──────────────┐
  │ veth1 [tc egress:    ├───┤ veth0 [xdp_vlan: count EtherType   │   │              │
  │  tc_vlan_push, VLAN   │   │  and length, PASS | redirect to    │   │              │
  │  100, where the frame │   │  veth2]                      veth2 ├───┤ veth3 (drv:  │
  │  is not tagged]       │   └───────────────────────────────────┘   │  XDP_PASS)   │
  └──────────────────────┘                                            └──────────────┘
  N UDP frames for VLAN 100 from net1/veth1; nobody has VLAN 100, so each stack that gets
  them drops them (kfree_skb OTHERHOST: a tag for a VLAN it has no interface for).

Where the tag travels (`tag`):
- `in-bytes`: the frame is sent with its 802.1Q header in its bytes;
- `offloaded`: sent untagged, tc's bpf_skb_vlan_push puts the tag in the skb's metadata and
  veth1 keeps it there (tx-vlan-offload on, veth's default), as a NIC's offload would;
- `software`: the same with veth1's tx-vlan-offload off: the kernel writes the tag into the
  bytes before veth1 transmits (validate_xmit_vlan).

What the kernel did (Linux 6.18; 56-byte frames, 60 with the tag in their bytes):

| tag | program sees (skb and drv) | veth0's rx-vlan-offload | a capture on veth0 | redirected out of veth2, net2 gets |
|---|---|---|---|---|
| in-bytes | 0x8100, 60 bytes | no difference | 60 bytes, tag from PACKET_AUXDATA | tagged (skb, drv) |
| software | 0x8100, 60 bytes | no difference | 60 bytes, tag from PACKET_AUXDATA | tagged (skb, drv) |
| **offloaded** | **0x0800, 56 bytes: no tag** | no difference | 60 bytes, tag from PACKET_AUXDATA | skb: tagged; **drv: untagged** |

- An XDP program sees a tag only when it is in the frame's bytes. A tag in the skb's
  metadata (what the sender's tx-vlan-offload leaves there) is invisible to it in both modes
  (kernels since 6.8 can read it in drv mode with the bpf_xdp_metadata_rx_vlan_tag kfunc);
  counters count the frame without it.
- The receiving veth's rx-vlan-offload changes nothing: veth has no hardware to strip a
  tag, and the stack takes the tag out of the bytes before any tap in every case
  (skb_vlan_untag): a capture sees it only in PACKET_AUXDATA (the lab's Capture puts it
  back, as tcpdump does). It is the *sender's* offload that decides what XDP sees.
- A native redirect turns the frame into an xdp_frame, which has no room for the skb's
  metadata: an offloaded tag is lost on the way, silently (no counter, no drop). A
  generic redirect sends the skb itself and keeps it.
"""  # noqa: E501 - the table of what the kernel did, a row a line
from __future__ import annotations

import struct

import pytest

from lab.counters import assert_counters, merge, redirected, veth_hop
from lab.fates import assert_fates, fates_before
from lab.packets import udp_frame
from lab.programs import PACKAGE_BPF, Program
from lab.topology import End, Topology, Veth

N = 50
VID = 100
OBJECT = PACKAGE_BPF / "vlan.bpf.o"
COUNT, REDIRECT = Program(OBJECT, "xdp_vlan"), Program(OBJECT, "xdp_vlan_redirect")
PASS = Program(PACKAGE_BPF / "queues.bpf.o", "xdp_queue")     # counts per queue, passes: NAPI on veth3
TOPOLOGY = Topology((Veth(End("net1", "veth1", "02:00:00:00:01:02"), End("fwd", "veth0", "02:00:00:00:01:01")),
                     Veth(End("fwd", "veth2", "02:00:00:00:02:01"), End("net2", "veth3", "02:00:00:00:02:02"))),
                    name="vlan")
TAGS = ["in-bytes", "software", "offloaded"]


@pytest.fixture
def lab_topology():
    return TOPOLOGY


def set_offload(lab, key: str, short: str, value: str) -> None:
    """`ethtool -K IF SHORT VALUE` in the lab (txvlan, rxvlan), put back as it was after the
    test: the lab is kept for the next test, and checked to be as built."""
    ns, ifname = key.split("/")
    long = {"txvlan": "tx-vlan-offload", "rxvlan": "rx-vlan-offload"}[short]
    shown = dict(line.split(": ", 1) for line in lab.run(ns, ["ethtool", "-k", ifname]).stdout.splitlines()
                 if ": " in line)
    was = shown[long].split()[0]
    lab.run(ns, ["ethtool", "-K", ifname, short, value])
    lab.on_close(f"turn {short} {was} again on {key}", lambda: lab.run(ns, ["ethtool", "-K", ifname, short, was]))


def with_tag(frame: bytes) -> bytes:
    return frame[:12] + struct.pack("!HH", 0x8100, VID) + frame[12:]


@pytest.fixture
def sent(lab, tag):
    """(the bytes net1/veth1 sends, the frame as tagged): tc pushes the tag unless it is in
    the bytes already; veth1's tx-vlan-offload decides where the pushed tag travels."""
    plain = bytes(udp_frame(eth_src=lab.iface("net1/veth1").mac, eth_dst=lab.iface("fwd/veth0").mac))
    if tag == "in-bytes":
        return with_tag(plain), with_tag(plain)
    set_offload(lab, "net1/veth1", "txvlan", "on" if tag == "offloaded" else "off")
    lab.run("net1", ["tc", "qdisc", "add", "dev", "veth1", "clsact"])
    lab.on_close("remove clsact from net1/veth1", lambda: lab.run("net1", ["tc", "qdisc", "del", "dev", "veth1",
                                                                             "clsact"], check=False))
    lab.run("net1", ["tc", "filter", "add", "dev", "veth1", "egress", "bpf", "direct-action", "obj", str(OBJECT),
                     "sec", "tc"])
    return plain, with_tag(plain)


def program_sees(program) -> dict[tuple[int, int], int]:
    return {struct.unpack("<HH", k): struct.unpack("<Q", v)[0] for k, v in program.map("seen").items()}


@pytest.mark.expect_drops
@pytest.mark.parametrize("rxvlan", ["on", "off"])
@pytest.mark.parametrize("tag", TAGS)
def test_the_program_sees_a_tag_only_in_the_bytes_and_a_capture_always_from_auxdata(
        lab, xdp_program, xdp_mode, tag, rxvlan, sent):
    raw, tagged = sent
    veth0 = lab.iface("fwd/veth0")
    set_offload(lab, "fwd/veth0", "rxvlan", rxvlan)
    program = xdp_program(COUNT)
    program.attach(veth0, xdp_mode)
    tap = lab.capture("fwd/veth0")
    before, fates = lab.snapshot(), fates_before(lab)

    lab.port("net1/veth1").send(raw, count=N)

    visible = len(tagged) if tag != "offloaded" else len(tagged) - 4      # skb->len: the tag's 4 bytes or not
    tap.expect(tagged, count=N)
    assert tap.restored_tags == N, "the stack untags before taps: the capture gets the tag from PACKET_AUXDATA"
    assert program_sees(program) == {(0x8100 if tag != "offloaded" else 0x0800, visible): N}
    assert_counters(before, veth_hop(xdp_mode, N, N * visible))
    assert_fates(fates, {"fwd/veth0": {"kfree_skb OTHERHOST": N}})
    if fates is not None:           # untagged by the stack, each dropped frame is still this send's
        dropped = (lab.fates() - fates).frames
        assert len(dropped) == N and all(f.send is not None and f.send.raw == raw for f in dropped)


@pytest.mark.expect_drops
@pytest.mark.parametrize("tag", TAGS)
def test_a_native_redirect_drops_an_offloaded_tag(lab, xdp_program, xdp_mode, tag, sent):
    raw, tagged = sent
    veth0, veth2, veth3 = lab.iface("fwd/veth0"), lab.iface("fwd/veth2"), lab.iface("net2/veth3")
    program = xdp_program(REDIRECT)
    with veth0.ns.entered():        # a devmap's ifindex is resolved in the writer's namespace
        program.map("out").update(struct.pack("<I", 0), struct.pack("<I", veth2.ifindex))
    if xdp_mode == "drv":           # a native redirect into veth2 needs NAPI on its peer: a native program
        xdp_program(PASS).attach(veth3, "drv")
    program.attach(veth0, xdp_mode)
    out = lab.capture("net2/veth3")
    before, fates = lab.snapshot(), fates_before(lab)

    lab.port("net1/veth1").send(raw, count=N)

    lost = tag == "offloaded" and xdp_mode == "drv"
    arrives = tagged[:12] + tagged[16:] if lost else tagged
    out.expect(arrives, count=N)
    assert out.restored_tags == (0 if lost else N)
    visible = len(tagged) - 4 if tag == "offloaded" else len(tagged)
    redirect = {"rx_queue_0_xdp_redirect": N} if xdp_mode == "drv" else {}
    counters = merge(veth_hop(xdp_mode, N, N * visible, **redirect),
                     redirected(xdp_mode, N, N * visible, "fwd/veth2", "net2/veth3"))
    assert_counters(before, counters)
    said = {"net2/veth3": {"kfree_skb OTHERHOST": N}}       # net2 drops them: a VLAN it lacks, or veth0's MAC
    if xdp_mode == "drv":
        said["fwd/veth0"] = {"xdp_devmap_xmit -> fwd/veth2": N}
    assert_fates(fates, said)
