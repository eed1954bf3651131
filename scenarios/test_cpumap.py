"""Redirect into a cpumap: frames go up the stack on another CPU, through the cpumap's kthread.

      net1                       fwd
  ┌────────────┐   ┌──────────────────────────────────────────────┐
  │ veth1      │───│ veth0 [xdp_cpu: bpf_redirect_map(cpus, CPU)] │
  └────────────┘   │   cpus[CPU] = {qsize, program on the entry}   │
                   │   -> kthread on CPU -> skb -> fwd's stack      │
                   └──────────────────────────────────────────────┘
  N frames from net1/veth1 to 192.168.0.1; fwd/veth0 has no address, so fwd's stack drops
  each frame the kthread delivers (kfree_skb IP_INADDRERRORS): that, and a tap on veth0
  (taps see the cpumap's skbs), is how the scenario sees them arrive.

What the kernel did (Linux 6.18; CPU is 1 on a machine with two CPUs or more):

| mode | cpus[CPU] | arrive | what the kernel said |
|---|---|---|---|
| skb, drv | qsize 2048 | all, on CPU | `xdp_cpumap_enqueue -> cpu N` ×N, `xdp_cpumap_kthread on cpu N` ×N, then fwd's stack drops them |
| drv; skb where the entry's program sees every skb (6.18) | qsize 2048, xdp_cpu_drop on the entry | none | `xdp_cpumap_kthread XDP_DROP on cpu N` ×N: no interface counter says so |
| skb where cpu_map_bpf_prog_run_skb has the list form (6.1, 6.12) | qsize 2048, xdp_cpu_drop on the entry | all but one per kthread batch (none where the kthread takes one skb at a time) | `xdp_cpumap_kthread XDP_DROP on cpu N` ×B in B reports (one per batch of at most 8), the other N-B delivered to fwd's stack |
| drv | qsize 8, a burst | some | `xdp_cpumap_enqueue drops -> cpu N` ×D, and no interface counter says so |
| skb | qsize 8, a burst | some | as drv, and each drop also as `xdp_redirect_err ENOSPC` and `kfree_skb XDP` |

The enqueue tracepoint counts differently per path: in drv mode its `processed` is every
frame of a flush, dropped ones included; in skb mode one frame at a time, dropped ones
excluded. The scenario checks the books balance either way.

The split in skb mode is a kernel bug, not a race: from 5.15 (generic cpumap) until the skb
path was rewritten to take an array (6.18 has it), cpu_map_bpf_prog_run_skb returned from its
loop at the first skb its program dropped or redirected, and the rest of that kthread batch
went up the stack without the program seeing it. Probed from the function's parameters in
the kernel's BTF (lab.features.cpumap_skb_batch_bug); the scenario asserts one drop per batch
there, counted from the kthread tracepoint's reports.

Before 5.15 (5.10) generic XDP cannot redirect into a cpumap at all (EBADRQC; probed:
cpu_map_generic_redirect), and from 5.8 to 5.14 it refuses to attach a program using a
cpumap whose entries can carry a program (probed: dev_map_can_have_prog): the skb rows are
skipped there with that reason.
"""  # noqa: E501 - the table of what the kernel did, a row a line
from __future__ import annotations

import os
import struct

import pytest

from lab.counters import assert_counters, veth_hop
from lab.errors import PreflightError
from lab.fates import assert_fates, fates_before, fates_when
from lab.features import cpumap_skb_batch_bug
from lab.packets import udp_frame
from lab.plugin import attach_where_allowed
from lab.programs import PACKAGE_BPF, Program
from lab.topology import End, Topology, Veth

N = 100
BURST = 5_000
CPUMAP_BATCH = 8       # skbs or frames the kthread takes from its queue at a time (kernel/bpf/cpumap.c)
CPU = 1 if (os.cpu_count() or 1) > 1 else 0
XDP_CPU = Program(PACKAGE_BPF / "cpumap.bpf.o", "xdp_cpu")
TOPOLOGY = Topology((Veth(End("net1", "veth1", "02:00:00:00:01:02"), End("fwd", "veth0", "02:00:00:00:01:01")),),
                    name="cpumap")


@pytest.fixture
def lab_topology():
    return TOPOLOGY


@pytest.fixture
def steer(lab, xdp_program, xdp_mode):
    """xdp_cpu on fwd/veth0, every frame to CPU; `steer(qsize, program)` fills the entry."""
    prog = xdp_program(XDP_CPU)
    prog.map("cpu_target").update(struct.pack("<I", 0), struct.pack("<I", CPU))

    def fill(qsize: int, second: str | None = None) -> None:
        fd = xdp_program(XDP_CPU.named(second)).fd if second else 0
        prog.map("cpus").update(struct.pack("<I", CPU), struct.pack("<Ii", qsize, fd))
        attach_where_allowed(prog, lab.iface("fwd/veth0"), xdp_mode)
    return fill


def first_hop(mode: str, n: int, length: int) -> dict:
    c = veth_hop(mode, n, n * length)
    if mode == "drv":
        c["fwd/veth0"]["rx_queue_0_xdp_redirect"] = n
    return c


def frame(lab):
    return udp_frame(eth_src=lab.iface("net1/veth1").mac, eth_dst=lab.iface("fwd/veth0").mac)


def test_frames_reach_the_stack_on_the_chosen_cpu(lab, steer, xdp_mode):
    steer(2048)
    f, tap = frame(lab), lab.capture("fwd/veth0")
    before, fates = lab.snapshot(), fates_before(lab)
    lab.port("net1/veth1").send(f, count=N)
    assert len(tap.expect(f, count=N)) == N, "the kthread's skbs go up fwd/veth0's stack, taps see them"
    assert_counters(before, first_hop(xdp_mode, N, len(bytes(f))))
    assert_fates(fates, {"fwd/veth0": {f"xdp_cpumap_enqueue -> cpu {CPU}": N, f"xdp_cpumap_kthread on cpu {CPU}": N,
                                       "kfree_skb IP_INADDRERRORS": N}})


def test_a_program_on_the_cpumap_entry_runs_first_on_that_cpu(lab, steer, xdp_mode, lab_findings):
    """xdp_cpu_drop on the entry drops every frame on the remote CPU, in drv mode, and in skb
    mode (skbs that generic XDP redirected) where the kernel runs the entry's program on every
    skb. Where cpu_map_bpf_prog_run_skb has the list form (5.15 until the rewrite; probed:
    lab.features.cpumap_skb_batch_bug), it stops at the first skb of each kthread batch that
    its program drops: one drop per batch, the rest of the batch delivered up the stack."""
    steer(2048, "xdp_cpu_drop")
    f, tap = frame(lab), lab.capture("fwd/veth0")
    before, fates = lab.snapshot(), lab.fates()
    lab.port("net1/veth1").send(f, count=N)
    assert_counters(before, first_hop(xdp_mode, N, len(bytes(f))))
    kthread, dropping = f"xdp_cpumap_kthread on cpu {CPU}", f"xdp_cpumap_kthread XDP_DROP on cpu {CPU}"

    def balanced(d) -> bool:     # every frame through the kthread, dropped by the program or delivered
        said = d.mapping().get("fwd/veth0", {})
        tap.poll()
        return said.get(kthread, 0) == N and said.get(dropping, 0) + len(tap.received) == N
    d = fates_when(fates, balanced)
    said = d.mapping()["fwd/veth0"]
    dropped, delivered = said.get(dropping, 0), len(tap.received)
    batches = d.reports("fwd/veth0", dropping)
    lab_findings(dropped_by_entry_program=dropped, delivered=delivered, batches_with_a_drop=batches, fates=d.mapping())
    assert said[f"xdp_cpumap_enqueue -> cpu {CPU}"] == said[kthread] == N, said
    assert dropped + delivered == N, f"dropped by the program or delivered, each frame once: {said}"
    assert said.get(d.as_said("kfree_skb IP_INADDRERRORS"), 0) == delivered, said
    if xdp_mode == "skb" and cpumap_skb_batch_bug():
        # how many skbs a batch holds is timing (a kthread that keeps up takes one at a time,
        # and then drops them all); one drop per batch is the kernel's rule either way
        assert dropped == batches >= -(-N // CPUMAP_BATCH), \
            f"one drop per kthread batch of at most {CPUMAP_BATCH}: {dropped} dropped in {batches} batches"
    else:
        assert dropped == N and delivered == 0, f"{xdp_mode}: the entry's program sees every frame: {said}"


@pytest.mark.expect_drops
def test_a_full_cpumap_queue_drops_and_the_books_balance(lab, steer, xdp_mode):
    steer(8)
    f, tap = frame(lab), lab.capture("fwd/veth0")
    before, fates = lab.snapshot(), lab.fates()
    lab.port("net1/veth1").send(f, count=BURST)
    assert_counters(before, first_hop(xdp_mode, BURST, len(bytes(f))))   # no counter for the drops

    def drained(d) -> bool:     # every frame delivered by the kthread or dropped at the enqueue
        said = d.mapping().get("fwd/veth0", {})
        return said.get(f"xdp_cpumap_enqueue drops -> cpu {CPU}", 0) + said.get(f"xdp_cpumap_kthread on cpu {CPU}",
                                                                                 0) == BURST
    d = fates_when(fates, drained)
    said = d.mapping()["fwd/veth0"]
    dropped = said.get(f"xdp_cpumap_enqueue drops -> cpu {CPU}", 0)
    delivered = said[f"xdp_cpumap_kthread on cpu {CPU}"]
    assert dropped > 0, f"a queue of 8 under a burst of {BURST}: {said}"
    assert delivered + dropped == BURST and said[d.as_said("kfree_skb IP_INADDRERRORS")] == delivered, said
    tap.poll()
    assert len(tap.received) + tap.drops == delivered, "the tap saw (or counted as its own drop) each delivered frame"
    enqueued = said[f"xdp_cpumap_enqueue -> cpu {CPU}"]
    if xdp_mode == "drv":
        assert enqueued == BURST, "drv: processed counts every frame of a flush"
        assert set(said) == {f"xdp_cpumap_enqueue -> cpu {CPU}", f"xdp_cpumap_enqueue drops -> cpu {CPU}",
                             f"xdp_cpumap_kthread on cpu {CPU}", d.as_said("kfree_skb IP_INADDRERRORS")}, said
    else:
        assert enqueued == delivered, "skb: one frame at a time, the dropped ones not counted as processed"
        assert said["xdp_redirect_err ENOSPC"] == dropped and said[d.as_said("kfree_skb XDP")] == dropped, said


def test_preflight_names_a_cpumap_without_entries(lab, steer):
    """A qsize of 0 deletes the entry (the kernel's way): the redirect has nowhere to go."""
    steer(0)
    with pytest.raises(PreflightError, match=r"cpus of cpumap.bpf.o:xdp_cpu \(.* on fwd/veth0\) has no entry: "
                                             r"bpf_redirect_map into it fails"):
        lab.port("net1/veth1").send(frame(lab))
