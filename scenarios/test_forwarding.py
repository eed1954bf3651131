"""l2fwd forwards, rewrites and passes: the seed topology, in skb and drv mode.

      net1                         fwd                                   net2
  ┌──────────────┐   ┌──────────────────────────────────────┐   ┌──────────────────┐
  │ veth1        │───│ veth0 [l2fwd: skb|drv]   veth2       │───│ veth3 [xdp_pass, │
  │ 192.168.1.2  │   │ 192.168.1.1              192.168.0.254│   │  drv mode only]  │
  │ 02:..:01:02  │   │ 02:..:01:01              02:..:00:fe │   │ 192.168.0.1      │
  └──────────────┘   └──────────────────────────────────────┘   │ 00:00:11:22:33:44│
                                                                 └──────────────────┘
  l2fwd_map: 192.168.0.1 -> {outif: ifindex of veth2, dst_mac: 00:00:11:22:33:44}
  txport_map: veth2 -> veth2

Counters, as this kernel (6.18) keeps them for a veth:
  * skb mode: every interface on the path counts frames and bytes as sent.
  * drv mode: veth0 runs NAPI, so its rx (and veth1's tx, which veth reports from the same
    per-queue stats) counts skb->len after eth_type_trans pulled the 14-byte Ethernet
    header: bytes = frame length - 14. Redirected frames reach veth2/veth3 as xdp_frames
    and are counted whole. ethtool -S shows the rx_queue_0_xdp_* counters only in drv mode.
"""
from __future__ import annotations

import socket

from lab.counters import assert_counters, veth_hop
from lab.fates import assert_fates, fates_before
from lab.l2fwd.forwarder import assert_verdicts
from lab.l2fwd.repro import assert_passed_up
from lab.l2fwd.seed import ROUTED, SEED_MAC, seed_frame
from lab.packets import arp_request, ipv6_udp_frame, rewrite

N = 100


def udp_listener(lab, ns, ip, port=5678):
    """A UDP socket in `ns` whose buffer holds all N datagrams before the test reads them: the
    memory a datagram is charged for differs by kernel and path (on 6.1, an skb built from an
    XDP page counts a whole page, and 100 of them overflow the default 208 KiB)."""
    sock = lab.ns(ns).socket(socket.AF_INET, socket.SOCK_DGRAM)
    lab.on_close(f"close udp socket in {ns}", sock.close)
    sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)      # SO_RCVBUFFORCE: 16 MiB
    sock.bind((ip, port))
    sock.settimeout(2.0)
    return sock


def test_forwarded_with_mac_rewrite(lab, routed, xdp_mode):
    """N frames for 192.168.0.1 leave veth2 with only the destination MAC rewritten, and
    net2's stack accepts them (its UDP socket receives every payload)."""
    frame = seed_frame(lab, ROUTED)
    out = rewrite(frame, eth_dst=SEED_MAC)
    sink = udp_listener(lab, "net2", ROUTED)
    egress, ingress_tap = lab.capture("net2/veth3"), lab.capture("fwd/veth0")
    before = lab.snapshot()

    lab.port("net1/veth1").send(frame, count=N)

    got = egress.expect(out, count=N)
    assert got[0] == bytes(out), "the forwarded frame differs from the sent one in more than the destination MAC"
    egress.expect_no_other()
    ingress_tap.expect_none()      # XDP redirected them before any tap on veth0 could see them
    payloads = [sink.recv(2048) for _ in range(N)]
    assert payloads == [bytes(frame["Raw"])] * N
    assert_verdicts(routed, redirect=N)
    L = len(frame)
    expected = veth_hop(xdp_mode, N, N * L)
    expected["fwd/veth2"] = {"tx_packets": N, "tx_bytes": N * L}
    expected["net2/veth3"] = {"rx_packets": N, "rx_bytes": N * L}
    if xdp_mode == "drv":
        expected["fwd/veth0"]["rx_queue_0_xdp_redirect"] = N
        expected["fwd/veth2"]["tx_queue_0_xdp_xmit"] = N
        expected["net2/veth3"].update(rx_queue_0_xdp_packets=N, rx_queue_0_xdp_bytes=N * L)
    assert_counters(before, expected)


def test_unknown_destination_goes_up_the_stack(lab, routed, xdp_mode):
    """A destination not in l2fwd_map is passed: fwd's own stack delivers it to its UDP
    socket on 192.168.1.1; nothing reaches net2."""
    frame = seed_frame(lab, "192.168.1.1")
    sink = udp_listener(lab, "fwd", "192.168.1.1")
    egress, ingress_tap = lab.capture("net2/veth3"), lab.capture("fwd/veth0")
    before = lab.snapshot()

    lab.port("net1/veth1").send(frame, count=N)

    ingress_tap.expect(frame, count=N)      # passed frames are seen by taps after XDP
    payloads = [sink.recv(2048) for _ in range(N)]
    assert payloads == [bytes(frame["Raw"])] * N
    egress.expect_none()
    assert_verdicts(routed, {"pass": N})
    assert_counters(before, veth_hop(xdp_mode, N, N * len(frame)))


def test_arp_is_passed_and_answered(lab, routed, xdp_mode):
    """ARP is not IPv4: passed to fwd's stack, which answers every who-has."""
    n = 10
    request = arp_request(eth_src=lab.iface("net1/veth1").mac, ip_src="192.168.1.2", ip_dst="192.168.1.1")
    replies, egress = lab.capture("net1/veth1"), lab.capture("net2/veth3")
    before = lab.snapshot()

    lab.port("net1/veth1").send(request, count=n)

    got = replies.expect(_arp_reply(lab), count=n)
    assert len(got) == n
    replies.expect_no_other()
    egress.expect_none()
    assert_verdicts(routed, {"pass": n})
    expected = veth_hop(xdp_mode, n, n * len(request))
    reply_len = len(got[0])
    expected["fwd/veth0"].update(tx_packets=n, tx_bytes=n * reply_len)
    expected["net1/veth1"].update(rx_packets=n, rx_bytes=n * reply_len)
    assert_counters(before, expected)


def _arp_reply(lab):
    from scapy.layers.l2 import ARP, Ether

    from lab.packets import Mask
    veth0, veth1 = lab.iface("fwd/veth0"), lab.iface("net1/veth1")
    return Mask(Ether(dst=veth1.mac, src=veth0.mac) / ARP(op=2, hwsrc=veth0.mac, psrc="192.168.1.1",
                                                          hwdst=veth1.mac, pdst="192.168.1.2"))


def test_ipv6_is_passed_not_forwarded(lab, routed, xdp_mode):
    """IPv6 is passed to fwd's stack (which has IPv6 disabled and drops it); nothing leaves."""
    frame = ipv6_udp_frame(eth_src=lab.iface("net1/veth1").mac, eth_dst=lab.iface("fwd/veth0").mac)
    assert_passed_up(lab, routed, frame, xdp_mode, N)


def test_malformed_and_truncated_never_forwarded(lab, routed, xdp_mode):
    """Frames for the routed destination cut inside the IPv4 header, or with a bad version or
    IHL: passed, counted as malformed, never forwarded, and the program never reads past
    data_end (the verifier would refuse it, and every frame is accounted for)."""
    whole = bytes(seed_frame(lab, ROUTED))
    truncated = [whole[:n] for n in range(14, 14 + 20)]            # Ethernet + 0..19 bytes of IPv4
    bad_ihl = bytes(seed_frame(lab, ROUTED, ihl=4))
    bad_version = whole[:14] + bytes([0x65]) + whole[15:]          # version 6 in an IPv4 ethertype
    frames = truncated + [bad_ihl, bad_version]
    egress, ingress_tap = lab.capture("net2/veth3"), lab.capture("fwd/veth0")
    before = lab.snapshot()
    fates = fates_before(lab)

    lab.port("net1/veth1").send_each(frames)

    for f in frames:
        ingress_tap.expect(f)
    ingress_tap.expect_no_other()
    egress.expect_none()
    m = len(frames)
    assert_verdicts(routed, {"pass": m, "malformed": m})
    assert_counters(before, veth_hop(xdp_mode, m, sum(len(f) for f in frames)))
    # fwd's stack drops each of them as a bad IPv4 header, and the kernel names every one
    d = assert_fates(fates, {"fwd/veth0": {"kfree_skb IP_INHDR": m}})
    if d is not None:
        assert sorted(f.send.raw for f in d.frames if f.send) == sorted(frames), d.by_send()
