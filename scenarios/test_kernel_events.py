"""The kernel's own word is there: the lab's tracepoint programs load on this kernel and an
event reaches the lab, and the table of the kernel matrix says which events this kernel
does not report (and why, from its BTF).

      net1                  fwd
  ┌────────────┐   ┌───────────────────┐
  │ veth1      │───│ veth0 (no address, │
  │            │   │  no program)       │
  └────────────┘   └───────────────────┘
  N frames from net1/veth1 for veth0's MAC: fwd's stack drops each of them
  (kfree_skb IP_INADDRERRORS where the kernel gives a reason: 5.17+).

Every drop scenario degrades to counters alone where the recorder cannot load (and says so
in a warning); this scenario is what fails instead, on each kernel of the matrix.
"""
from __future__ import annotations

import pytest

from lab.fates import REASON, FatesError, assert_fates
from lab.packets import udp_frame
from lab.topology import End, Topology, Veth

N = 20
TOPOLOGY = Topology((Veth(End("net1", "veth1", "02:00:00:00:01:02"), End("fwd", "veth0", "02:00:00:00:01:01")),),
                    name="events")


@pytest.fixture
def lab_topology():
    return TOPOLOGY


def test_the_recorder_loads_and_hears_a_drop(lab, lab_findings):
    try:
        before = lab.fates()
    except FatesError as e:
        pytest.fail(f"the lab's tracepoint programs do not work on this kernel: {e}")
    lab.port("net1/veth1").send(udp_frame(eth_src=lab.iface("net1/veth1").mac, eth_dst=lab.iface("fwd/veth0").mac),
                                count=N)
    after = assert_fates(before, {"fwd/veth0": {"kfree_skb IP_INADDRERRORS": N}})
    assert after is not None
    lab_findings(not_reported=sorted(before.missing), fates=after.mapping())
    assert set(before.missing) <= {"xdp_redirect", "xdp_redirect_err", "xdp_cpumap_enqueue", "xdp_cpumap_kthread",
                                   REASON}, f"events this kernel should report: {before.missing}"
