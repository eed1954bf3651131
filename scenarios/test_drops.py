"""Where frames vanish, and which counter says so: the seed's hunt as scenarios.

      net1                         fwd                                     net2
  ┌──────────────┐   ┌────────────────────────────────────────┐   ┌───────────────────┐
  │ veth1        │───│ veth0 [l2fwd: skb|drv]   veth2          │───│ veth3 [peer setup:│
  │ 192.168.1.2  │   │ 192.168.1.1              192.168.0.254  │   │  none|pass|gro]   │
  └──────────────┘   └────────────────────────────────────────┘   │ 192.168.0.1       │
                                                                    │ 00:00:11:22:33:44 │
  l2fwd_map: 192.168.0.1 -> {outif: veth2, dst_mac}                └───────────────────┘
  txport_map: veth2 -> veth2          N frames net1 -> 192.168.0.1, counters on all four

Checked on Linux 6.18 (x86_64). What each kernel does is asserted exactly; where another
kernel differs, the kernel matrix (issue 8) will say so per kernel. Measured here:
  * A veth that runs NAPI (native XDP program, or GRO, on it) counts the skbs it receives
    (and its peer counts them as sent) at skb->len after the Ethernet header was pulled:
    14 bytes less than the frame. xdp_frames redirected into it are counted whole.
  * drv mode, redirect into a veth whose peer has neither an XDP program nor GRO: the
    frames vanish; the INGRESS veth0 counts them in rx_dropped and ethtool's
    rx_queue_0_drops. On 6.1 (checked in a VM: python -m lab kernels) the TARGET veth2
    counts them as tx_dropped instead: kernels that report XDP features (6.3+) refuse the
    redirect at the devmap, older ones fail it at the target's transmit. The scenario
    picks the expectation by probing for XDP features, not by version.
  * Generic (skb) redirect to a veth whose peer runs an XDP program: the skb enters the
    peer's NAPI and is counted at frame length - 14 on veth2 and veth3.
  * GRO on the peer takes only skbs that are eligible for GRO: the generic-XDP redirect's
    skbs are not, so in skb mode GRO changes nothing.
  * A failed redirect (no txport_map entry) returns XDP_ABORTED: in skb mode no interface
    counter moves at all; in drv mode only ethtool's rx_queue_0_xdp_drops does.
"""
from __future__ import annotations

import platform

import pytest

from lab import ethtool
from lab.counters import veth_hop
from lab.errors import MapError, PreflightError, XdpError
from lab.fates import assert_fates, fates_before, refused_redirect
from lab.features import redirect_readiness, veth_gro_napi, xdp_features
from lab.l2fwd.forwarder import L2fwd
from lab.l2fwd.repro import send_and_observe
from lab.l2fwd.seed import GO_SEED, ROUTED, SEED, SEED_MAC, seed_frame
from lab.maps import hexbytes
from lab.peers import PEERS
from lab.topology import End, Topology, Veth
from lab.xdp import veth_xdp_max_mtu

N = 200
KERNEL = platform.release()

# (mode, peer of veth2) -> do the frames arrive in net2? GRO turns on a veth's NAPI from 5.13
# on (probed: lab.features.veth_gro_napi); before, a GRO peer is a bare one.
OUTCOME = {
    ("skb", "none"): "arrive", ("skb", "pass"): "arrive", ("skb", "gro"): "arrive",
    ("drv", "none"): "vanish", ("drv", "pass"): "arrive", ("drv", "gro"): "arrive" if veth_gro_napi() else "vanish",
}


def bare(mode: str, peer: str) -> bool:
    """A native redirect into a veth whose peer runs no NAPI."""
    return mode == "drv" and (peer == "none" or (peer == "gro" and not veth_gro_napi()))


def expected_counters(mode: str, peer: str, n: int, length: int, features: bool) -> dict:
    """Exact counter deltas for the matrix (see the module docstring for the rules).

    `features`: the kernel reports XDP features (6.3+). Then the devmap refuses a target
    without ndo-xmit at once and the INGRESS veth drops the frames; a kernel without them
    (6.1) accepts the redirect (veth0 counts rx_queue_0_xdp_redirect) and the TARGET veth
    fails to transmit: tx_dropped on fwd/veth2."""
    c = veth_hop(mode, n, n * length)
    if bare(mode, peer):
        if features:
            c["fwd/veth0"].update(rx_dropped=n, rx_queue_0_drops=n)
        else:
            c["fwd/veth0"]["rx_queue_0_xdp_redirect"] = n
            c["fwd/veth2"] = {"tx_dropped": n}
        return c
    if mode == "skb":
        b = n * (length - 14 if peer == "pass" else length)
        c["fwd/veth2"] = {"tx_packets": n, "tx_bytes": b}
        c["net2/veth3"] = {"rx_packets": n, "rx_bytes": b}
        if peer == "pass":
            c["net2/veth3"].update(rx_queue_0_xdp_packets=n, rx_queue_0_xdp_bytes=b)
        return c
    c["fwd/veth0"]["rx_queue_0_xdp_redirect"] = n
    c["fwd/veth2"] = {"tx_packets": n, "tx_bytes": n * length, "tx_queue_0_xdp_xmit": n}
    c["net2/veth3"] = {"rx_packets": n, "rx_bytes": n * length, "rx_queue_0_xdp_packets": n,
                       "rx_queue_0_xdp_bytes": n * length}
    return c


def expected_fates(mode: str, peer: str, n: int, features: bool) -> dict:
    """What the kernel reports: a refused redirect (see lab.fates.refused_redirect), or
    frames delivered to net2, whose stack drops them for want of a UDP socket on their
    port (NO_SOCKET); in drv mode the devmap's transmit reports them sent."""
    if bare(mode, peer):
        return refused_redirect("fwd/veth0", "fwd/veth2", n, features)
    delivered = {"net2/veth3": {"kfree_skb NO_SOCKET": n}}
    if mode == "drv":
        delivered["fwd/veth0"] = {"xdp_devmap_xmit -> fwd/veth2": n}
    return delivered


@pytest.mark.expect_drops
@pytest.mark.parametrize("l2fwd_peer", PEERS)
def test_redirect_matrix(lab, l2fwd, xdp_mode, l2fwd_peer, lab_findings):
    """{skb, drv} x {peer: nothing, xdp_pass, GRO}: drv mode into a bare veth vanishes and
    veth0's rx_dropped says so; every other combination delivers every frame.

    The outcome is picked by probing the kernel, not by its version: can fwd/veth2 receive
    redirected frames in this mode (its XDP features where the kernel reports them, 6.3+;
    else its peer's program and GRO state)? The table says what 6.18 does; a kernel whose
    probe disagrees with it fails with both in the message."""
    l2fwd.route(ROUTED, via=lab.iface("fwd/veth2"), mac=SEED_MAC)
    probe = redirect_readiness(lab, lab.iface("fwd/veth2"), xdp_mode)
    o = send_and_observe(lab, l2fwd, N)
    moved = {k: {c: v for c, v in cs.items() if "drop" in c or "err" in c} for k, cs in o.delta.items()}
    lab_findings(arrived=len(o.arrived), sent=N, probe=str(probe), moved={k: v for k, v in moved.items() if v},
                 fates=o.fates.mapping() if o.fates else None)

    outcome = "arrive" if probe.ready else "vanish"
    assert outcome == OUTCOME[(xdp_mode, l2fwd_peer)], f"kernel {KERNEL}: the probe says {probe}, the table " \
        f"says the frames {OUTCOME[(xdp_mode, l2fwd_peer)]}"
    assert len(o.arrived) == (N if outcome == "arrive" else 0), \
        f"{xdp_mode} mode, peer {l2fwd_peer}, kernel {KERNEL}: {probe}, so the frames should {outcome}; " \
        f"{len(o.arrived)} of {N} arrived"
    assert o.verdicts["redirect"] == N, "the program redirected every frame either way"
    assert sum(o.verdicts.values()) == N
    features = xdp_features(lab.iface("fwd/veth2")) is not None
    o.delta.check(expected_counters(xdp_mode, l2fwd_peer, N, o.frame_len, features),
                  f"kernel {KERNEL}, {xdp_mode}/{l2fwd_peer}")
    assert_fates(o.fates_before, expected_fates(xdp_mode, l2fwd_peer, N, features))


@pytest.mark.xdp_modes("drv")
@pytest.mark.parametrize("l2fwd_peer", ["none"])
def test_preflight_stops_a_native_redirect_into_a_bare_veth(lab, l2fwd):
    """Without expect_drops, the same setup fails before the first frame, with the reason:
    the device's XDP features where the kernel reports them, else the peer's state."""
    l2fwd.route(ROUTED, via=lab.iface("fwd/veth2"), mac=SEED_MAC)
    before = lab.snapshot()
    with pytest.raises(PreflightError) as e:
        lab.port("net1/veth1").send(seed_frame(lab))
    why = ("XDP features [basic, redirect, rx-sg] lack ndo-xmit" if xdp_features(lab.iface("fwd/veth2")) is not None
           else "the kernel reports no XDP features")
    gro_on = ethtool.gro(lab.iface("net2/veth3"))       # off by default from 5.13 on; on (and useless) on 5.10
    state = f"its peer net2/veth3 has no xdp and GRO {'on' if gro_on else 'off'}"
    if gro_on and not veth_gro_napi():
        state += (", and GRO does not turn on a veth's NAPI before Linux 5.13 (no veth_set_features in "
                  "/proc/kallsyms)")
    gro = ", turn GRO on there (ethtool -K veth3 gro on)," if veth_gro_napi() else ""
    veth2 = lab.iface("fwd/veth2")
    assert str(e.value).startswith(
        f"preflight the lab's programs: frames would vanish: txport_map[{veth2.ifindex}] of {l2fwd.name} (drv on "
        f"fwd/veth0) -> fwd/veth2 in drv mode: cannot receive ({why}; {state}): "
        f"attach an XDP program to net2/veth3 (xdp_pass){gro} or attach in skb mode"), str(e.value)
    assert (lab.snapshot() - before).moved() == {}, "nothing was sent"
    assert lab.sends == [], "the port records no send"


@pytest.mark.expect_drops
def test_missing_txport_entry_aborts(lab, l2fwd, xdp_mode, lab_findings):
    """l2fwd_map routes to outif, but txport_map has no entry: bpf_redirect_map fails and
    returns its flags (0 = XDP_ABORTED). skb mode: no interface counter shows the loss;
    drv mode: only ethtool's rx_queue_0_xdp_drops does. The kernel says it both ways:
    xdp:xdp_exception XDP_ABORTED, then the skb freed (kfree_skb NOT_SPECIFIED, in
    do_xdp_generic or veth_xdp_rcv_skb)."""
    l2fwd.set_l2fwd(ROUTED, lab.iface("fwd/veth2"), SEED_MAC)
    assert l2fwd.problems(lab, xdp_mode) == [
        f"l2fwd_map routes {ROUTED} to outif {lab.iface('fwd/veth2').ifindex}, which txport_map does not hold: "
        "the redirect fails (XDP_ABORTED); add it with set_txport()"]
    o = send_and_observe(lab, l2fwd, N)
    lab_findings(fates=o.fates.mapping() if o.fates else None)

    assert o.arrived == []
    assert o.verdicts == {"aborted": N, "drop": 0, "pass": 0, "tx": 0, "redirect": 0, "malformed": 0}
    expected = veth_hop(xdp_mode, N, N * o.frame_len, **({"rx_queue_0_xdp_drops": N} if xdp_mode == "drv" else {}))
    o.delta.check(expected, f"kernel {KERNEL}")
    d = assert_fates(o.fates_before, {"fwd/veth0": {"xdp_exception XDP_ABORTED": N, "kfree_skb NOT_SPECIFIED": N}})
    assert d is None or {f.send for f in d.frames} == {lab.sends[0]}, "every freed skb is one the lab sent"




@pytest.mark.expect_drops
def test_seed_layout_bug_is_caught_by_the_mac_rewrite_check(lab, l2fwd, xdp_mode, lab_findings):
    """The seed's control plane wrote l2fwd_map values as a Go struct with an 8-byte int.

    The whole 16-byte value is refused by the harness, naming both layouts. Its first 12
    bytes (what a 12-byte map takes: `07 00 00 00 00 00 00 00 00 00 11 22` in the seed's
    dump, here with veth2's ifindex) are accepted by the kernel. The program reads dst_mac
    at offset 4, which holds the upper half of the int: the frames leave with destination
    00:00:00:00:00:00 (not 00:00:00:00:11:22: the 11 22 sit in the padding). veth3 counts
    them as received; net2's stack drops them as not for this host, and no counter of any
    interface shows that drop.
    """
    veth2 = lab.iface("fwd/veth2")
    go = GO_SEED.pack(Outif=veth2.ifindex, DstMac=bytes.fromhex(SEED_MAC.replace(":", "")))
    with pytest.raises(MapError, match=r"value is 16 bytes \(go struct .*\), the map's value is 12 bytes "
                                       r"\(struct fwd \{ u32 outif @0; u8 dst_mac\[6\] @4; \}"):
        l2fwd.set_l2fwd_raw(ROUTED, go, layout=GO_SEED)
    with pytest.raises(MapError, match=r"field DstMac at offset 8 \(6 bytes\), the map's dst_mac at offset 4"):
        l2fwd.check_layout(GO_SEED)
    l2fwd.set_txport(veth2)
    l2fwd.set_l2fwd_raw(ROUTED, go[:12])
    raw = l2fwd.map("l2fwd_map").lookup(l2fwd.key(ROUTED))
    assert hexbytes(raw) == f"{veth2.ifindex:02x} 00 00 00 00 00 00 00  00 00 11 22"
    assert l2fwd.l2fwd_entries()[ROUTED]["dst_mac"] == "00:00:00:00:00:00"

    frame = seed_frame(lab)
    egress = lab.capture("net2/veth3")
    before = lab.snapshot()
    fates = fates_before(lab)
    lab.port("net1/veth1").send(frame, count=N)
    from lab.packets import rewrite
    with pytest.raises(AssertionError, match=r"differs in Ether.dst: expected '00:00:11:22:33:44', "
                                             r"received '00:00:00:00:00:00'"):
        egress.expect(rewrite(frame, eth_dst=SEED_MAC), count=N, timeout=0.5)
    assert len(egress.expect(rewrite(frame, eth_dst="00:00:00:00:00:00"), count=N)) == N
    d = before.again() - before
    assert d["net2/veth3"]["rx_packets"] == N, "veth3 counts them as received"
    dropped = {k: c for k, v in d.items() for c in v if "drop" in c or "err" in c}
    assert dropped == {}, f"no drop counter shows them (kernel {KERNEL}): {dropped}"
    said = {"net2/veth3": {"kfree_skb OTHERHOST": N}}
    if xdp_mode == "drv":
        said["fwd/veth0"] = {"xdp_devmap_xmit -> fwd/veth2": N}
    try:
        d = assert_fates(fates, said)
    finally:
        if fates is not None:       # for the kernel matrix: what this kernel said, matching or not
            lab_findings(fates=(lab.fates() - fates).mapping())
    if d is not None:
        assert len(d.frames) == N and {f.send for f in d.frames} == {lab.sends[0]}, d.by_send()
        assert {f.data[:6] for f in d.frames} == {bytes(6)}, "dropped with the zero destination MAC"


JUMBO = Topology((Veth(End("net1", "veth1", "02:00:00:00:01:02", "192.168.1.2/24", mtu=9000),
                       End("fwd", "veth0", "02:00:00:00:01:01", "192.168.1.1/24")),) + SEED.veths[1:],
                 name="jumbo-peer")


@pytest.mark.parametrize("lab_topology", [JUMBO], ids=["peer-mtu-9000"])
def test_native_attach_refused_when_the_peer_mtu_is_too_large(lab):
    """veth refuses native XDP when its peer's MTU does not fit a page (veth_xdp_set); the
    error carries the kernel's extack message and the fix; skb mode attaches."""
    veth0 = lab.iface("fwd/veth0")
    with L2fwd() as f:
        with pytest.raises(XdpError) as e:
            f.attach(veth0, "drv")
        assert str(e.value) == ("attach xdp program xdp_l2fwd to fwd/veth0 in drv mode: veth: Peer MTU is too "
                                "large to set XDP (ERANGE); lower the peer's MTU (a page must hold a frame: at "
                                f"most {veth_xdp_max_mtu()} on this kernel) or use skb mode")
        assert f.attachments == []
        assert f.attach(veth0, "skb").mode == "skb"



def test_the_mtu_limit_the_fix_names_is_the_kernels():
    """The fix names the largest peer MTU this kernel takes (computed from its BTF: on 6.18,
    4096 - 256 - 320 - 14 = 3506): native XDP attaches at it and is refused one byte above."""
    from lab.built import build
    from lab.peers import XDP_PASS
    from lab.programs import XdpProgram
    limit = veth_xdp_max_mtu()
    for mtu, ok in ((limit, True), (limit + 1, False)):
        pair = Topology((Veth(End("a", "v0", mtu=mtu), End("b", "v1")),), name="mtu")
        with build(pair, fates="off") as lab, XdpProgram(XDP_PASS) as p:
            if ok:
                assert p.attach(lab.iface("b/v1"), "drv").mode == "drv"
            else:
                with pytest.raises(XdpError, match=f"Peer MTU is too large to set XDP .*at most {limit} on this"):
                    p.attach(lab.iface("b/v1"), "drv")
