"""Fuzz the live forwarder: generated frames through l2fwd, checked against a model of what
it must do, on the wire and in its verdict counters.

      net1                         fwd                                   net2
  ┌──────────────┐   ┌──────────────────────────────────────┐   ┌──────────────────┐
  │ veth1  ──────┼───┼─ veth0 [l2fwd: skb|drv]  veth2 ──────┼───┼─ veth3           │
  └──────────────┘   │  (tap: what was passed)              │   │ (capture: what   │
                     └──────────────────────────────────────┘   │  was forwarded)  │
  l2fwd_map: 192.168.0.1 and 192.168.0.2 -> veth2                └──────────────────┘

Frames: Ethernet with random payloads, VLAN-tagged IPv4, IPv4 with options, IPv6, ARP,
IPv4 truncated at every length, bad IPv4 version/IHL, random bytes (all at least 14
bytes: AF_PACKET refuses shorter frames on this kernel). 60 batches per mode (in a slow
kernel-matrix guest 60 / its slowdown, at least 10: lab.pace.share); set
XDPLAB_FUZZ_EXAMPLES for a longer run. For every batch:
  * forwarded = exactly the frames the model routes, with only the destination MAC changed;
  * passed up fwd's stack = exactly all the others, as the tap on veth0 shows them (the
    capture puts back the VLAN tag the kernel takes off), except VLAN-tagged frames too
    short to untag (< 20 bytes): the kernel frees those before any tap, and no counter says so;
  * verdicts: redirect + pass = frames sent, malformed as the model says, nothing aborted;
  * counters: veth0 received every frame, veth2/veth3 carried exactly the forwarded ones,
    no drop or error counter moved.
"""
from __future__ import annotations

import itertools
import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.pace import Bound, share
from lab.packets import udp_bytes

ROUTES = {"192.168.0.1": "00:00:11:22:33:44", "192.168.0.2": "02:00:00:00:0f:02"}
DSTS = [*ROUTES, "192.168.0.3", "192.168.1.1", "10.0.0.1"]
SRC_MAC, DST_MAC = "02:00:00:00:01:02", "02:00:00:00:01:01"


def model(frame: bytes) -> tuple[str, bool, bytes | None]:
    """What l2fwd must do with `frame`: (verdict, malformed, frame as forwarded or None)."""
    if frame[12:14] != b"\x08\x00":
        return "pass", False, None
    if len(frame) < 34 or frame[14] >> 4 != 4 or frame[14] & 0xF < 5:
        return "pass", True, None
    dst = ".".join(str(b) for b in frame[30:34])
    if dst in ROUTES:
        return "redirect", False, bytes.fromhex(ROUTES[dst].replace(":", "")) + frame[6:]
    return "pass", False, None


VLAN_TYPES = (b"\x81\x00", b"\x88\xa8")


def tap_view(frame: bytes) -> bytes | None:
    """A passed frame as a tap on the ingress veth sees it (None: the kernel dropped it)."""
    if frame[12:14] in VLAN_TYPES and len(frame) < 20:
        return None
    return frame


def ipv4(**kw):
    return udp_bytes(eth_src=SRC_MAC, eth_dst=DST_MAC, ip_src="192.168.1.2", **kw)


def scapy_frame(kind: str, dst: str, payload: bytes) -> bytes:
    from scapy.layers.inet import IP, UDP, IPOption
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Dot1Q, Ether
    from scapy.packet import Raw
    eth = Ether(src=SRC_MAC, dst=DST_MAC)
    if kind == "vlan":
        return bytes(eth / Dot1Q(vlan=7) / IP(src="192.168.1.2", dst=dst) / UDP() / Raw(payload))
    if kind == "options":
        opt = IPOption(b"\x01" * (4 * (1 + len(payload) % 9)))   # NOPs, 4..36 bytes
        return bytes(eth / IP(src="192.168.1.2", dst=dst, options=[opt]) / UDP() / Raw(payload))
    if kind == "ipv6":
        return bytes(eth / IPv6(src="fd00::2", dst="fd00::1") / UDP() / Raw(payload))
    return bytes(Ether(src=SRC_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.168.1.2", pdst=dst))


BATCHES = itertools.count()
dsts = st.sampled_from(DSTS)
payloads = st.binary(min_size=0, max_size=64)
frames = st.one_of(
    st.builds(lambda d, p: ipv4(ip_dst=d, payload=p), dsts, payloads),
    st.builds(lambda d, p, n: ipv4(ip_dst=d, payload=p)[:max(14, n)], dsts, payloads, st.integers(14, 60)),
    st.builds(lambda d, b: (lambda f: f[:14] + bytes([b]) + f[15:])(ipv4(ip_dst=d)), dsts, st.integers(0, 255)),
    st.builds(scapy_frame, st.sampled_from(["vlan", "options", "ipv6", "arp"]), dsts, payloads),
    st.binary(min_size=14, max_size=128),
    st.builds(lambda b: bytes.fromhex("020000000101020000000102") + b"\x08\x00" + b, st.binary(max_size=80)),
)


@pytest.fixture
def fuzz_lab(lab, l2fwd):
    for dst, mac in ROUTES.items():
        l2fwd.route(dst, via=lab.iface("fwd/veth2"), mac=mac)
    return lab, l2fwd, lab.port("net1/veth1"), lab.capture("net2/veth3"), lab.capture("fwd/veth0")


def wait_for(capture, frame: bytes, timeout: float = 30.0) -> None:
    bound = Bound(timeout)
    while frame not in capture.pending:
        assert not bound.expired(), f"marker frame never reached {capture.iface.key}"
        capture.poll(0.01)


@settings(max_examples=int(os.environ.get("XDPLAB_FUZZ_EXAMPLES", 0)) or share(60, floor=10), deadline=None,
          database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.lists(frames, min_size=1, max_size=12))
def test_fuzzed_frames_balance_the_books(fuzz_lab, batch):
    lab, l2fwd, port, egress, tap = fuzz_lab
    # two markers end every batch: frames leave each queue in order, so once both markers
    # are seen, every frame of the batch has been decided and delivered. They carry a
    # number of their own, so that a marker of an earlier batch (one hypothesis abandoned
    # half-way, say) can never stand in for this batch's.
    seq = next(BATCHES)
    fwd_marker = ipv4(ip_dst="192.168.0.1", payload=b"marker-%d" % seq)
    pass_marker = ipv4(ip_dst="192.168.1.1", payload=b"marker-%d" % seq)
    sent = [*batch, fwd_marker, pass_marker]
    expect = [model(f) for f in sent]
    for capture in (egress, tap):      # whatever an abandoned batch left behind is not this batch's
        capture.poll()
        capture.pending.clear()
    verdicts_before, counters_before = l2fwd.verdicts(), lab.snapshot()

    port.send_each(sent)
    wait_for(egress, expect[-2][2])
    wait_for(tap, pass_marker)
    egress.poll()
    tap.poll()

    forwarded = [out for v, _, out in expect if v == "redirect"]
    passed = [f for f, (v, _, _) in zip(sent, expect) if v == "pass"]
    seen = [view for view in map(tap_view, passed) if view is not None]
    assert Counter(egress.pending) == Counter(forwarded), "forwarded frames differ from the model"
    assert Counter(tap.pending) == Counter(seen), "passed frames differ from the model"
    got = {k: v - verdicts_before[k] for k, v in l2fwd.verdicts().items()}
    assert got == {"aborted": 0, "drop": 0, "pass": len(passed), "tx": 0, "redirect": len(forwarded),
                   "malformed": sum(m for _, m, _ in expect)}
    d = counters_before.again() - counters_before
    assert d["fwd/veth0"]["rx_packets"] == len(sent)
    assert d["fwd/veth2"].get("tx_packets", 0) == d["net2/veth3"].get("rx_packets", 0) == len(forwarded)
    assert {(k, c) for k, v in d.items() for c in v if "drop" in c or "err" in c} == set()
    assert egress.drops == tap.drops == 0
