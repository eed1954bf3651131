"""A program nobody here wrote the lab around: xdp-tutorial style redirect by source MAC,
with a pinned devmap and a per-action stats array (bpf/redirect_smac.bpf.c).

      h1                         dut                                    h2
  ┌──────────────┐   ┌─────────────────────────────────────┐   ┌───────────────────┐
  │ veth1        │───│ veth0 [xdp_redirect_smac: skb|drv]   │   │                   │
  │ 10.0.0.1     │   │ 10.0.0.254          veth2 10.1.0.254 │───│ veth3 10.1.0.1    │
  │ 02:00:0a:..  │   └─────────────────────────────────────┘   │ [xdp_pass in drv] │
  └──────────────┘                                              └───────────────────┘
  redirect_params: h1's MAC -> h2's MAC (new destination)   tx_port[0] = dut/veth2 (pinned)
  xdp_stats_map[action] = {rx_packets, rx_bytes}

What the kernel did (6.18), N frames from h1:
  | source MAC      | verdict  | where they end            | counters beyond the ingress hop           |
  | in the map      | redirect | h2/veth3, dst MAC = h2's  | drv: xdp_redirect, xdp_xmit, veth3 NAPI   |
  | not in the map  | pass     | dut's stack (no forwarding) | none                                |

Run your own program of this shape instead: `pytest scenarios/test_redirect_smac.py
--lab-program path/to/your.o:function` (the same map names and layouts).
"""
from __future__ import annotations

import os

import pytest

from lab import sweep
from lab.counters import assert_counters, merge, redirected, veth_hop
from lab.packets import rewrite, udp_frame
from lab.peers import default_peer, peers_ready
from lab.topology import End, Topology, Veth

N = 100
XDP_PASS, XDP_REDIRECT = 2, 4
TOPOLOGY = Topology((Veth(End("h1", "veth1", "02:00:0a:00:00:01", "10.0.0.1/24"),
                          End("dut", "veth0", "02:00:0a:00:00:fe", "10.0.0.254/24")),
                     Veth(End("dut", "veth2", "02:00:0a:01:00:fe", "10.1.0.254/24"),
                          End("h2", "veth3", "02:00:0a:01:00:01", "10.1.0.1/24"))), name="smac")

pytestmark = pytest.mark.lab_program("../bpf/redirect_smac.bpf.o:xdp_redirect_smac")


@pytest.fixture
def lab_topology():
    return TOPOLOGY


@pytest.fixture
def smac(lab, xdp_program, lab_program, xdp_mode):
    """The program attached to dut/veth0 in xdp_mode, h2's veth ready for redirected frames."""
    prog = xdp_program(lab_program)
    with peers_ready(lab, lab.iface("dut/veth0"), default_peer(xdp_mode)):
        prog.attach(lab.iface("dut/veth0"), xdp_mode)
        yield prog


def test_frames_from_a_known_source_are_redirected_with_the_new_destination(lab, smac, xdp_mode):
    h1, h2 = lab.iface("h1/veth1"), lab.iface("h2/veth3")
    smac.map("redirect_params").put(h1.mac, h2.mac)                 # MAC strings, packed as u8[6]
    smac.map("tx_port").put(0, lab.iface("dut/veth2"))              # written from dut's namespace
    frame = udp_frame(eth_src=h1.mac, eth_dst=lab.iface("dut/veth0").mac, ip_src=h1.ip, ip_dst=h2.ip)
    egress = lab.capture("h2/veth3")
    before = lab.snapshot()

    lab.port("h1/veth1").send(frame, count=N)

    egress.expect(rewrite(frame, eth_dst=h2.mac), count=N)
    egress.expect_no_other()
    L = len(frame)
    assert smac.map("xdp_stats_map").entries() == {XDP_REDIRECT: {"rx_packets": N, "rx_bytes": N * L}}
    ingress = veth_hop(xdp_mode, N, N * L, "h1/veth1", "dut/veth0",
                       **({"rx_queue_0_xdp_redirect": N} if xdp_mode == "drv" else {}))
    assert_counters(before, merge(ingress, redirected(xdp_mode, N, N * L, "dut/veth2", "h2/veth3")))


def test_frames_from_an_unknown_source_are_passed(lab, smac, xdp_mode):
    h1 = lab.iface("h1/veth1")
    smac.map("tx_port").put(0, lab.iface("dut/veth2"))
    # dut does not forward: no reply
    frame = udp_frame(eth_src=h1.mac, eth_dst=lab.iface("dut/veth0").mac, ip_src=h1.ip, ip_dst="10.1.0.1")
    tap = lab.capture("dut/veth0")
    before = lab.snapshot()

    lab.port("h1/veth1").send(frame, count=N)

    tap.expect(frame, count=N)       # taps see only what XDP passed
    assert smac.map("xdp_stats_map").entries() == {XDP_PASS: {"rx_packets": N, "rx_bytes": N * len(frame)}}
    assert_counters(before, veth_hop(xdp_mode, N, N * len(frame), "h1/veth1", "dut/veth0"))


@pytest.mark.xdp_modes("skb")
def test_the_pinned_devmap_stays_inside_the_lab(smac):
    """LIBBPF_PIN_BY_NAME pins tx_port under this process's own bpffs folder, never in
    /sys/fs/bpf itself (where a second run or worker would meet it: 'couldn't reuse pinned
    map ... parameter mismatch')."""
    found = [os.path.join(d, f) for d, _, fs in os.walk(sweep.pin_dir()) for f in fs]
    assert [p for p in found if p.endswith("-redirect_smac_bpf_o/tx_port")], found
    assert not os.path.exists("/sys/fs/bpf/tx_port")
