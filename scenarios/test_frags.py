"""Jumbo frames and multi-buffer XDP: a plain program against an `xdp.frags` one.

      net1                          fwd
  ┌────────────────┐   ┌─────────────────────────────────────────┐
  │ veth1 mtu 9000 │───│ veth0 mtu 9000 [xdp_len | xdp_len_frags] │
  └────────────────┘   └─────────────────────────────────────────┘
  10 frames each of 64, 1500, 3000, 4000 and 9000 bytes from net1/veth1; both programs
  count, per whole frame length (bpf_xdp_get_buff_len), the frames seen and their longest
  linear part (data_end - data), and pass them (fwd's stack drops them: no address).

What the kernel did (Linux 6.18; LIMIT = the largest single-buffer frame, a page less the
XDP headroom and struct skb_shared_info: 3520 bytes here, MTU 3506):

| program | skb mode | drv mode |
|---|---|---|
| xdp_len (plain) | every frame whole and linear (generic XDP linearizes) | attach refused: "Peer MTU is too large to set XDP", the fix names 3506 |
| xdp_len_frags (`SEC("xdp.frags")`) | whole length; the linear part stops at LIMIT | the same |

Kernels before 5.18 (5.10) have no multi-buffer XDP, probed from the BPF helpers in their BTF
(no bpf_xdp_get_buff_len): a frags program does not load there, a plain one is refused
natively as above, and what a program sees of jumbo frames cannot be measured (skipped, with
the probe's word).
"""
from __future__ import annotations

import struct

import pytest

from lab.btf import kernel_helper
from lab.counters import assert_counters, veth_hop
from lab.errors import LabError, XdpError
from lab.fates import assert_fates, fates_before
from lab.packets import udp_frame
from lab.programs import PACKAGE_BPF, Program
from lab.topology import End, Topology, Veth
from lab.xdp import veth_xdp_max_mtu

SIZES = (64, 1500, 3000, 4000, 9000)
EACH = 10
FRAGS = Program(PACKAGE_BPF / "frags.bpf.o")
PLAIN = Program(PACKAGE_BPF / "queues.bpf.o", "xdp_queue")       # no multi-buffer helper: loads on every kernel
MULTI_BUFFER = kernel_helper("xdp_get_buff_len") is not False
NO_MULTI_BUFFER = "this kernel has no multi-buffer XDP: no BPF helper xdp_get_buff_len in its BTF (Linux 5.18+)"
TOPOLOGY = Topology((Veth(End("net1", "veth1", "02:00:00:00:01:02", mtu=9000),
                          End("fwd", "veth0", "02:00:00:00:01:01", mtu=9000)),), name="jumbo")


@pytest.fixture
def lab_topology():
    return TOPOLOGY


def sized(lab, size: int):
    base = len(bytes(udp_frame(payload=b"")))
    return udp_frame(eth_src=lab.iface("net1/veth1").mac, eth_dst=lab.iface("fwd/veth0").mac,
                     payload=b"\0" * (size - base))


def test_native_attach_needs_a_frags_program_above_the_single_buffer_limit(lab, xdp_program):
    if not MULTI_BUFFER:
        with pytest.raises(XdpError, match=f"Peer MTU is too large to set XDP .*at most {veth_xdp_max_mtu()} on"):
            xdp_program(PLAIN).attach(lab.iface("fwd/veth0"), "drv")
        with pytest.raises(LabError):       # SEC("xdp.frags"): BPF_F_XDP_HAS_FRAGS, and the helper, are unknown
            xdp_program(FRAGS, "xdp_len_frags")
        return
    plain = xdp_program(FRAGS, "xdp_len")
    with pytest.raises(XdpError, match=f"Peer MTU is too large to set XDP .*at most {veth_xdp_max_mtu()} on this"):
        plain.attach(lab.iface("fwd/veth0"), "drv")
    assert xdp_program(FRAGS, "xdp_len_frags").attach(lab.iface("fwd/veth0"), "drv").mode == "drv"


@pytest.mark.parametrize("function, mode", [("xdp_len", "skb"), ("xdp_len_frags", "skb"),
                                                ("xdp_len_frags", "drv")])   # a plain one in drv: refused, above
def test_what_a_program_sees_of_jumbo_frames(lab, xdp_program, mode, function):
    if not MULTI_BUFFER:
        pytest.skip(NO_MULTI_BUFFER)
    prog = xdp_program(FRAGS, function)
    prog.attach(lab.iface("fwd/veth0"), mode)
    limit = veth_xdp_max_mtu() + 14
    before, fates = lab.snapshot(), fates_before(lab)
    port = lab.port("net1/veth1")
    for size in SIZES:
        port.send(sized(lab, size), count=EACH)

    expected = {size: (EACH, size if function == "xdp_len" else min(size, limit)) for size in SIZES}
    seen = {struct.unpack("<I", k)[0]: struct.unpack("<QII", v)[:2] for k, v in prog.map("lengths").items()}
    assert seen == expected, f"{function} in {mode} mode: (frames, longest linear part) per frame length"
    n = EACH * len(SIZES)
    assert_counters(before, veth_hop(mode, n, EACH * sum(SIZES)))
    assert_fates(fates, {"fwd/veth0": {"kfree_skb IP_INADDRERRORS": n}})
