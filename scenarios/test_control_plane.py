"""Your control plane, not the lab's: the seed's Go loader (controlplane/l2fwdctl, built from
Debian's cilium/ebpf and netlink packages) loads bpf/l2fwd.bpf.o inside namespace fwd, attaches
it with netlink.LinkSetXdpFdWithFlags and fills l2fwd_map from a Go struct. The lab runs it
(lab.run), adopts what it attached (lab.adopt) and catches each of the seed's three suspects.

      net1                         fwd                                      net2
  ┌──────────────┐   ┌─────────────────────────────────────────┐   ┌───────────────────┐
  │ veth1        │───│ veth0 [l2fwd, attached by l2fwdctl]      │   │ veth3             │
  │ 192.168.1.2  │   │ 192.168.1.1        veth2 192.168.0.254   │───│ 192.168.0.1       │
  └──────────────┘   └─────────────────────────────────────────┘   │ 00:00:11:22:33:44 │
                                                                     └───────────────────┘
What the kernel did (6.18), 100 frames net1 -> 192.168.0.1:
  | l2fwdctl flags                  | attach      | outcome                                          |
  | -flags auto (veth: skb, fixed)  | xdpgeneric  | all arrive, dst MAC 00:00:11:22:33:44             |
  | -flags seed (0 on a veth)       | xdp (drv)   | the preflight says fwd/veth2 cannot receive;      |
  |                                 |             | sent anyway: none arrive (ingress veth0 drops)    |
  | -layout seed (Go int, 16 bytes) | xdpgeneric  | the map holds 07 00 00 00 00 00 00 00 00 00 11 22:|
  |                                 |             | all arrive with dst MAC 00:00:00:00:00:00         |
  | -key-order host                 | xdpgeneric  | the key is 01 00 a8 c0: the dump says byte-swapped|
  |                                 |             | 192.168.0.1; every frame is passed, none forwarded|
"""
from __future__ import annotations

import json

import pytest

from lab import xdp
from lab.counters import assert_counters, merge, redirected, veth_hop
from lab.errors import MapError, PreflightError
from lab.fates import assert_fates, fates_before, refused_redirect
from lab.features import xdp_features
from lab.l2fwd.seed import EGRESS, GO_FIXED, GO_SEED, INGRESS, ROUTED, SEED_MAC, go_seed_bytes, seed_frame
from lab.maps import hexbytes
from lab.packets import rewrite
from lab.programs import PACKAGE_BPF

N = 100
CTL = PACKAGE_BPF.parent / "build" / "l2fwdctl"
OBJ = PACKAGE_BPF / "l2fwd.bpf.o"


def l2fwdctl(lab, *flags: str) -> dict:
    """Run the Go control plane inside namespace fwd, as the seed did; what it says it did.
    Its program stays attached when it exits; after the test it is detached, as an operator
    would with `ip link set veth0 xdp off` (the lab keeps its labs between tests, and checks
    that each is left as built)."""
    assert CTL.exists(), f"run the control plane {CTL}: not built; run `make setup` (it builds it with `make ctl`)"
    done = lab.run("fwd", [str(CTL), "-obj", str(OBJ), "-iface", "veth0",
                           "-route", f"{ROUTED}=veth2,{SEED_MAC}", *flags])
    said = json.loads(done.stdout)
    veth0 = lab.iface(INGRESS)
    lab.on_close("detach the control plane's program from fwd/veth0",
                 lambda: xdp.detach(veth0, xdp.query(veth0).mode or "skb"))
    return said


def test_a_sane_control_plane_forwards(lab):
    said = l2fwdctl(lab, "-flags", "auto")
    fwd = lab.adopt(INGRESS)
    assert (fwd.mode, said["attach_mode"], fwd.prog_id) == ("skb", "skb", said["prog_id"])
    veth2 = lab.iface(EGRESS)
    assert fwd.map("l2fwd_map").get(ROUTED) == {"outif": veth2.ifindex, "dst_mac": SEED_MAC}
    assert fwd.map("txport_map").entries() == {veth2.ifindex: veth2.ifindex}
    frame = seed_frame(lab)
    egress = lab.capture("net2/veth3")
    before = lab.snapshot()

    lab.port("net1/veth1").send(frame, count=N)

    egress.expect(rewrite(frame, eth_dst=SEED_MAC), count=N)
    egress.expect_no_other()
    L = len(frame)
    assert_counters(before, merge(veth_hop("skb", N, N * L), redirected("skb", N, N * L, EGRESS, "net2/veth3")))
    assert fwd.map("verdict_cnt").get(4) == N and fwd.run_stats()[0] >= N


def test_the_seeds_attach_flags_are_caught_before_traffic(lab):
    """Flags 0 on a veth: the kernel attaches natively, and fwd/veth2's peer has no program."""
    l2fwdctl(lab, "-flags", "seed")
    fwd = lab.adopt(INGRESS)
    assert fwd.mode == "drv"
    with pytest.raises(PreflightError, match=r"txport_map\[\d+\] of xdp_l2fwd \(adopted from fwd/veth0\) "
                                             r"\(drv on fwd/veth0\) -> fwd/veth2 in drv mode: cannot receive"):
        lab.port("net1/veth1").send(seed_frame(lab))


@pytest.mark.expect_drops
def test_the_seeds_attach_flags_drop_every_frame(lab):
    l2fwdctl(lab, "-flags", "seed")
    fwd = lab.adopt(INGRESS)
    frame = seed_frame(lab)
    egress = lab.capture("net2/veth3")
    before = lab.snapshot()
    fates = fates_before(lab)

    lab.port("net1/veth1").send(frame, count=N)

    egress.expect_none()
    L = len(frame)
    if xdp_features(lab.iface(EGRESS)) is not None:     # the devmap refuses the target: the ingress drops
        expected = veth_hop("drv", N, N * L, rx_dropped=N, rx_queue_0_drops=N)
    else:                                               # 6.1: accepted, then dropped by the target's transmit
        expected = merge(veth_hop("drv", N, N * L, rx_queue_0_xdp_redirect=N), {EGRESS: {"tx_dropped": N}})
    assert_counters(before, expected)
    assert fwd.map("verdict_cnt").get(4) == N, "the program redirected every frame"
    assert_fates(fates, refused_redirect(INGRESS, EGRESS, N, xdp_features(lab.iface(EGRESS)) is not None))


@pytest.mark.expect_drops
def test_the_seeds_go_struct_is_caught_in_the_map(lab):
    l2fwdctl(lab, "-layout", "seed")
    fwd = lab.adopt(INGRESS)
    m = fwd.map("l2fwd_map")
    veth2 = lab.iface(EGRESS)
    raw = m.lookup(bytes([192, 168, 0, 1]))
    assert raw == go_seed_bytes(veth2.ifindex)
    assert hexbytes(raw) == f"{veth2.ifindex:02x} 00 00 00 00 00 00 00  00 00 11 22"      # the seed's dump
    assert m.get(ROUTED) == {"outif": veth2.ifindex, "dst_mac": "00:00:00:00:00:00"}
    with pytest.raises(MapError, match=r"field DstMac at offset 8 \(6 bytes\), the map's dst_mac at offset 4"):
        m.value_layout.check(GO_SEED, "l2fwd_map value (Go struct of l2fwdctl)")
    m.value_layout.check(GO_FIXED, "l2fwd_map value (the fixed Go struct)")
    frame = seed_frame(lab)
    egress = lab.capture("net2/veth3")

    lab.port("net1/veth1").send(frame, count=N)

    egress.expect(rewrite(frame, eth_dst="00:00:00:00:00:00"), count=N)
    egress.expect_no_other()


@pytest.mark.expect_drops
def test_a_key_in_host_byte_order_is_flagged_by_the_dump(lab):
    l2fwdctl(lab, "-key-order", "host")
    fwd = lab.adopt(INGRESS)
    m = fwd.map("l2fwd_map")
    assert [hexbytes(k) for k, _ in m.items()] == ["01 00 a8 c0"]
    assert ("key BYTE-SWAPPED 192.168.0.1 (net2/veth3): written in host order, the program compares it with the "
            "address as it sits in the header (c0 a8 00 01)") in m.dump()
    egress = lab.capture("net2/veth3")

    lab.port("net1/veth1").send(seed_frame(lab), count=N)

    egress.expect_none()
    assert fwd.map("verdict_cnt").get(2) == N, "no route matches: l2fwd passes every frame to fwd's stack"
