"""Several queues on a veth pair: which receive queue a frame lands on, and what the
program sees of it (ctx->rx_queue_index), per mode and per queue count on either end.

      net1                               fwd
  ┌─────────────────────────┐   ┌──────────────────────────────────────┐
  │ veth1  tx queues 0..T-1 ├───┤ veth0  rx queues 0..R-1               │
  │  (each frame sent on one │   │ [xdp_queue: count per rx_queue_index, │
  │   tx queue: XPS)         │   │  XDP_PASS]                            │
  └─────────────────────────┘   └──────────────────────────────────────┘
  N frames on each tx queue of veth1 in turn (Port.send(queue=q)); veth0 has no address,
  so fwd's stack drops what the program passes (kfree_skb IP_INADDRERRORS, not asserted here).

What the kernel did (Linux 6.18, and the same in the 5.10 guest; T tx queues on veth1, R rx
queues on veth0):

| mode | T, R | frames sent on tx queue q arrive on | counters |
|---|---|---|---|
| drv | R ≥ T | rx queue q: `rx_queue_index` q | veth0 `rx_queue_<q>_xdp_packets` +N, `_xdp_bytes` |
| drv | R < T | attach refused: ENOSPC "XDP expects number of rx queues not less than peer tx queues" | - |
| skb | any | `rx_queue_index` q-1 (q = 0 and 1 both read 0); 0 where q-1 ≥ R | no per-queue counter |
| skb | q-1 ≥ R > 1 | not sent: queue 0, and a kernel WARNING that taints the kernel (below) | - |

Native mode: veth hands a frame sent on tx queue q to the peer's NAPI queue q (veth_xmit
in drivers/net/veth.c), so the kernel insists that the receiver has at least as many rx
queues as its peer has tx queues. Generic mode: veth leaves the skb's queue_mapping as the
sender's tx queue, and generic XDP reads a non-zero queue_mapping as "rx queue + 1"
(skb_get_rx_queue, netif_get_rxqueue in net/core/dev.c), so the program sees the queue
*below* the one the frame was sent on; where that queue does not exist, queue 0 (shape
tx4-rx1). Where the receiver has more than one rx queue the kernel also logs a WARNING once
per boot ("veth0 received packet on queue 2, but number of RX queues is 2", measured on
6.18) and marks itself tainted (W); a kernel with panic_on_warn would panic. The scenario
does not send those frames (a test lab must not taint the kernel it runs on; the session
fails if the kernel's taint changes). An AF_XDP socket or a per-queue map keyed by rx_queue_index is therefore
fed by different sender queues in skb and drv mode: see test_afxdp.py.
"""
from __future__ import annotations

import errno
import struct

import pytest

from lab.counters import assert_counters, veth_hop
from lab.errors import XdpError
from lab.packets import udp_frame
from lab.programs import PACKAGE_BPF, Program
from lab.topology import End, Topology, Veth

N = 50
QUEUE = Program(PACKAGE_BPF / "queues.bpf.o", "xdp_queue")
SHAPES = [(1, 4), (2, 2), (4, 4), (2, 4), (4, 2), (2, 1), (4, 1)]     # (veth1 tx queues, veth0 rx queues)


@pytest.fixture
def lab_topology(shape):
    tx, rx = shape
    return Topology((Veth(End("net1", "veth1", "02:00:00:00:01:02", tx_queues=tx, rx_queues=tx),
                          End("fwd", "veth0", "02:00:00:00:01:01", rx_queues=rx, tx_queues=rx)),),
                    name=f"queues-{tx}-{rx}")


def lands_on(mode: str, queue: int, rx_queues: int) -> int:
    """The rx_queue_index a frame sent on veth1's tx `queue` shows (see the table above)."""
    if mode == "drv":
        return queue
    seen = max(queue - 1, 0)
    return seen if seen < rx_queues else 0


def kernel_warns(mode: str, queue: int, rx_queues: int) -> bool:
    """Generic XDP reading rx queue q-1 of a device with fewer, more than one: WARN_ONCE in
    netif_get_rxqueue (net/core/dev.c), which taints the kernel."""
    return mode == "skb" and queue - 1 >= rx_queues > 1


def seen_per_queue(program) -> dict[int, int]:
    counts = {struct.unpack("<I", k)[0]: struct.unpack("<Q", v)[0] for k, v in program.map("rx_queue").items()}
    return {q: n for q, n in counts.items() if n}


def reset(program) -> None:
    for q in range(64):
        program.map("rx_queue").update(struct.pack("<I", q), struct.pack("<Q", 0))


@pytest.mark.parametrize("shape", SHAPES, ids=[f"tx{t}-rx{r}" for t, r in SHAPES])
def test_each_tx_queue_lands_on_an_rx_queue(lab, xdp_program, xdp_mode, shape):
    tx_queues, rx_queues = shape
    veth0, veth1 = lab.iface("fwd/veth0"), lab.iface("net1/veth1")
    program = xdp_program(QUEUE)
    if xdp_mode == "drv" and rx_queues < tx_queues:
        with pytest.raises(XdpError) as refused:
            program.attach(veth0, "drv")
        assert refused.value.errno == errno.ENOSPC
        assert "rx queues not less than peer tx queues" in str(refused.value)
        return
    program.attach(veth0, xdp_mode)
    frame = bytes(udp_frame(eth_src=veth1.mac, eth_dst=veth0.mac))
    port = lab.port("net1/veth1")
    sent_on = [q for q in range(tx_queues) if not kernel_warns(xdp_mode, q, rx_queues)]
    assert sent_on, "every shape sends on some queue"
    for queue in sent_on:
        reset(program)
        before = lab.snapshot()
        port.send(frame, count=N, queue=queue)
        assert_counters(before, veth_hop(xdp_mode, N, N * len(frame), queue=queue))
        assert seen_per_queue(program) == {lands_on(xdp_mode, queue, rx_queues): N}, \
            f"frames sent on veth1 tx queue {queue} ({xdp_mode}, {tx_queues} tx / {rx_queues} rx queues)"

