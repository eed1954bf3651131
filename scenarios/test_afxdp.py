"""The AF_XDP path of l2fwd: qidconf_map switches a queue to xsks_map.

      net1                           fwd                                     net2
  ┌────────────┐   ┌──────────────────────────────────────────────┐   ┌────────────────┐
  │ veth1  ────┼───┼─ veth0 [l2fwd: skb|drv]              veth2 ──┼───┼─ veth3         │
  │ (1 tx q)   │   │  rx queues 0,1                                │   │ (capture)      │
  └────────────┘   │   queue 0 ──qidconf_map[0]=1──► xsks_map[0]   │   └────────────────┘
                   │                                  └► AF_XDP socket (copy mode,    │
                   │                                     UMEM + fill + RX rings)       │
                   └──────────────────────────────────────────────┘
  l2fwd_map: 192.168.0.1 -> veth2 (what the frames would take without AF_XDP)

veth1 has one tx queue, so every frame arrives on veth0's rx queue 0; veth0 has a second
rx queue so that a socket can be bound to the wrong one. The last test gives both ends four
queues and sends on chosen tx queues: a socket on queue 1 is fed by tx queue 1 in drv mode
but by tx queue 2 in skb mode, where the program sees the queue below the one a frame was
sent on (see test_queues.py); tx queue 1's frames are then forwarded by l2fwd instead. Checked on Linux 6.18: frames
redirected to a socket bound to another queue vanish (the socket refuses them); in skb
mode no counter at all says so, in drv mode veth0's rx_dropped and rx_queue_0_drops do.
The kernel's tracepoints say it in both: xdp_redirect_err EINVAL via xsks_map[0] (and in
skb mode kfree_skb XDP).
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from lab.afxdp import XskSocket
from lab.counters import assert_counters, veth_hop
from lab.fates import assert_fates, fates_before
from lab.l2fwd.forwarder import assert_verdicts
from lab.l2fwd.repro import assert_passed_up
from lab.l2fwd.seed import SEED, SEED_MAC, seed_frame
from lab.topology import Topology, Veth

N = 64
TWO_QUEUES = Topology((Veth(SEED.veths[0].a, replace(SEED.veths[0].b, rx_queues=2)), SEED.veths[1]),
                      name="seed-two-queues")
FOUR_QUEUES = Topology((Veth(replace(SEED.veths[0].a, queues=4), replace(SEED.veths[0].b, queues=4)), SEED.veths[1]),
                       name="seed-four-queues")


@pytest.fixture
def lab_topology():
    return TWO_QUEUES


def open_xsk(lab, queue):
    xsk = XskSocket(lab.iface("fwd/veth0"), queue)
    lab.on_close(f"close AF_XDP socket on queue {queue}", xsk.close, together=True)
    return xsk


def steer(fwd, queue, xsk=None, enabled=True):
    """qidconf_map[queue] = enabled; xsks_map[queue] = the socket (if any)."""
    if xsk is not None:
        fwd.map("xsks_map").update(queue.to_bytes(4, "little"), xsk.fd.to_bytes(4, "little"))
    fwd.map("qidconf_map").update(queue.to_bytes(4, "little"), int(enabled).to_bytes(4, "little"))


def test_frames_reach_the_socket_intact_and_switching_the_queue_off_forwards_again(lab, routed, xdp_mode):
    xsk = open_xsk(lab, 0)
    steer(routed, 0, xsk)
    frame = bytes(seed_frame(lab))
    egress = lab.capture("net2/veth3")
    before = lab.snapshot()

    lab.port("net1/veth1").send(frame, count=N)
    got = xsk.receive(N)
    assert got == [frame] * N, "every frame reaches the socket byte for byte (the MAC rewrite is not on this path)"
    egress.expect_none()
    assert_verdicts(routed, redirect=N)
    assert xsk.statistics() == dict.fromkeys(xsk.statistics(), 0)
    redirected = {"rx_queue_0_xdp_redirect": N} if xdp_mode == "drv" else {}
    assert_counters(before, veth_hop(xdp_mode, N, N * len(frame), **redirected))

    steer(routed, 0, enabled=False)
    lab.port("net1/veth1").send(frame, count=N)
    egress.expect(bytes.fromhex(SEED_MAC.replace(":", "")) + frame[6:], count=N)
    assert xsk.receive(1) == [], "with the queue off, nothing more reaches the socket"
    assert_verdicts(routed, redirect=2 * N)


@pytest.mark.expect_drops
def test_a_socket_bound_to_another_queue_gets_nothing(lab, routed, xdp_mode):
    """The socket is bound to queue 1 but sits in xsks_map[0], where queue 0's frames go:
    the program redirects them (verdict redirect), the kernel refuses them for the socket."""
    xsk = open_xsk(lab, 1)
    steer(routed, 0, xsk)
    frame = bytes(seed_frame(lab))
    egress = lab.capture("net2/veth3")
    before = lab.snapshot()
    fates = fates_before(lab)

    lab.port("net1/veth1").send(frame, count=N)
    assert xsk.receive(N) == []
    egress.expect_none()
    assert_verdicts(routed, redirect=N)
    assert xsk.statistics() == dict.fromkeys(xsk.statistics(), 0), "the socket never saw them"
    drops = {"rx_dropped": N, "rx_queue_0_drops": N} if xdp_mode == "drv" else {}
    assert_counters(before, veth_hop(xdp_mode, N, N * len(frame), **drops))
    # the kernel's word: the socket refused them (EINVAL: bound to another queue); in skb mode
    # the skb is then freed as an XDP drop
    said = {"xdp_redirect_err EINVAL": N, **({"kfree_skb XDP": N} if xdp_mode == "skb" else {})}
    assert_fates(fates, {"fwd/veth0": said})


def test_a_queue_enabled_without_a_socket_passes_to_the_stack(lab, routed, xdp_mode):
    """qidconf_map[0] = 1, xsks_map[0] empty: bpf_redirect_map returns its flags, XDP_PASS;
    the frames go up fwd's stack (the tap on veth0 sees them), not to net2 though routed."""
    steer(routed, 0)
    assert_passed_up(lab, routed, bytes(seed_frame(lab)), xdp_mode, N)


def test_closing_the_socket_releases_it(lab, routed):
    """Closed, the socket leaves xsks_map (the kernel removes it): queue 0's frames find no
    socket and are passed, and its rings and UMEM are unmapped."""
    xsk = open_xsk(lab, 0)
    steer(routed, 0, xsk)
    frame = bytes(seed_frame(lab))
    lab.port("net1/veth1").send(frame)
    assert xsk.receive(1) == [frame]
    xsk.close()
    assert xsk.sock.fileno() == -1 and xsk.umem is None and xsk.rx is None and xsk.fill is None
    tap = lab.capture("fwd/veth0")
    before = routed.verdicts()      # the frame the socket received: redirect 1
    lab.port("net1/veth1").send(frame, count=N)
    tap.expect(frame, count=N)
    # no socket in xsks_map[0] any more: bpf_redirect_map passes
    assert_verdicts(routed, {"pass": N}, since=before)
    xsk.close()     # idempotent


@pytest.mark.parametrize("lab_topology", [FOUR_QUEUES], ids=["4-queues"])
def test_which_sender_queue_feeds_a_socket_on_queue_1_depends_on_the_mode(lab, routed, xdp_mode):
    """qidconf_map[1] = 1 and the socket (bound to queue 1) in xsks_map[1]. drv: frames sent
    on veth1's tx queue 1 reach the socket, tx queue 2's are forwarded to net2. skb: the
    other way round, since generic XDP shows tx queue q's frames as rx_queue_index q-1."""
    xsk = open_xsk(lab, 1)
    steer(routed, 1, xsk)
    frame = bytes(seed_frame(lab))
    rewritten = bytes.fromhex(SEED_MAC.replace(":", "")) + frame[6:]
    egress = lab.capture("net2/veth3")
    to_socket, forwarded = (1, 2) if xdp_mode == "drv" else (2, 1)

    before = lab.snapshot()
    lab.port("net1/veth1").send(frame, count=N, queue=to_socket)
    assert xsk.receive(N) == [frame] * N, f"tx queue {to_socket}'s frames reach the socket on queue 1 ({xdp_mode})"
    redirect = {f"rx_queue_{to_socket}_xdp_redirect": N} if xdp_mode == "drv" else {}
    assert_counters(before, veth_hop(xdp_mode, N, N * len(frame), queue=to_socket, **redirect))
    egress.expect_none()

    lab.port("net1/veth1").send(frame, count=N, queue=forwarded)
    egress.expect(rewritten, count=N)
    assert xsk.receive(1) == [], f"tx queue {forwarded}'s frames are forwarded, not given to the socket"
    assert_verdicts(routed, redirect=2 * N)
