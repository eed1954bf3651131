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
| xdp_len_frags (`SEC("xdp.frags")`) | whole length; the linear part stops at LIMIT (before 6.8, e.g. 6.1: every frame linear, as for a plain program; probed: skb_cow_data_for_xdp) | whole length; the linear part stops at LIMIT |

Frames larger than the receiving veth's MTU + 18 (the Ethernet header and room for one VLAN
tag: is_skb_forwardable) never reach its program, in either mode: veth drops them at
transmit (dev_forward_skb), the sender's send() gets ENOBUFS, the sender counts
`tx_dropped`, the receiver `rx_dropped`, and the kernel says `kfree_skb NOT_SPECIFIED` on
the sender. A frame of exactly MTU + 18 bytes (1518 into MTU 1500) goes through.

Kernels before 5.18 (5.10) have no multi-buffer XDP, probed from the BPF helpers in their BTF
(no bpf_xdp_get_buff_len): a frags program does not load there, a plain one is refused
natively as above, and what a program sees of jumbo frames cannot be measured (skipped, with
the probe's word).
"""  # noqa: E501 - the table of what the kernel did, a row a line
from __future__ import annotations

import errno
import struct

import pytest

from lab.btf import kernel_helper
from lab.counters import assert_counters, merge, veth_hop
from lab.errors import CompileError, DataplaneError, XdpError
from lab.fates import assert_fates, fates_before
from lab.features import kernel_symbol
from lab.packets import udp_frame
from lab.programs import PACKAGE_BPF, Program
from lab.topology import End, Topology, Veth
from lab.xdp import veth_xdp_max_mtu

SIZES = (64, 1500, 3000, 4000, 9000)
EACH = 10
FRAGS = Program(PACKAGE_BPF / "frags.bpf.o")
PLAIN = Program(PACKAGE_BPF / "queues.bpf.o", "xdp_queue")       # no multi-buffer helper: loads on every kernel
MULTI_BUFFER = kernel_helper("xdp_get_buff_len") is not False
# generic XDP keeps a frags program's frames in fragments since 6.8 (skb_cow_data_for_xdp);
# before, it linearizes every frame for every program (measured: 6.1 shows 9000 linear bytes)
GENERIC_FRAGS = kernel_symbol("skb_cow_data_for_xdp")
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
        # SEC("xdp.frags"): BPF_F_XDP_HAS_FRAGS, and the helper, are unknown: the object does not load
        with pytest.raises(CompileError, match=r"^load frags\.bpf\.o: "):
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

    linear = function == "xdp_len" or (mode == "skb" and not GENERIC_FRAGS)
    expected = {size: (EACH, size if linear else min(size, limit)) for size in SIZES}
    seen = {struct.unpack("<I", k)[0]: struct.unpack("<QII", v)[:2] for k, v in prog.map("lengths").items()}
    assert seen == expected, f"{function} in {mode} mode: (frames, longest linear part) per frame length"
    n = EACH * len(SIZES)
    assert_counters(before, veth_hop(mode, n, EACH * sum(SIZES)))
    assert_fates(fates, {"fwd/veth0": {"kfree_skb IP_INADDRERRORS": n}})


SMALL = Topology((Veth(End("net1", "veth1", "02:00:00:00:01:02", mtu=3000),     # a page still holds it: drv works
                       End("fwd", "veth0", "02:00:00:00:01:01", mtu=1500)),), name="big-into-1500")


@pytest.mark.expect_drops
@pytest.mark.parametrize("lab_topology", [SMALL], ids=["3000-into-1500"])
def test_frames_above_the_receivers_mtu_never_reach_the_program(lab, xdp_program, xdp_mode):
    """veth1 (MTU 3000) sends frames of 1518 (MTU + 18), 1519 and 2000 bytes to veth0 (MTU
    1500): veth forwards the first and drops the others on the way (dev_forward_skb: not
    forwardable), before any XDP program of veth0 sees them."""
    prog = xdp_program(PLAIN)
    prog.attach(lab.iface("fwd/veth0"), xdp_mode)
    tap = lab.capture("fwd/veth0")
    before, fates = lab.snapshot(), fates_before(lab)
    port = lab.port("net1/veth1")
    fits = sized(lab, 1500 + 18)
    port.send(fits, count=EACH)
    for size in (1500 + 19, 2000):
        for _ in range(EACH):
            with pytest.raises(DataplaneError) as dropped:
                port.send(sized(lab, size))
            assert dropped.value.errno == errno.ENOBUFS and "larger than its peer's MTU + 18" in str(dropped.value)
    tap.expect(fits, count=EACH)        # what the program passed: the frames that fit, and only those
    tap.expect_no_other()
    seen = {struct.unpack("<I", k)[0]: struct.unpack("<Q", v)[0] for k, v in prog.map("rx_queue").items()}
    assert {q: n for q, n in seen.items() if n} == {0: EACH}, "the program saw the frames that fit, no other"
    assert_counters(before, merge(veth_hop(xdp_mode, EACH, EACH * len(bytes(fits))),
                                  {"net1/veth1": {"tx_dropped": 2 * EACH}, "fwd/veth0": {"rx_dropped": 2 * EACH}}))
    assert_fates(fates, {"net1/veth1": {"kfree_skb NOT_SPECIFIED": 2 * EACH},
                         "fwd/veth0": {"kfree_skb IP_INADDRERRORS": EACH}})
