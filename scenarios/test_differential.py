"""Differential check: every frame of the decision scenarios, and 300 more from a seeded
generator (in a slow kernel-matrix guest 300 / its slowdown, at least 60: lab.pace.share),
run through the unit backend (BPF_PROG_TEST_RUN) and the live lab (skb and drv); any
difference in verdict, output bytes or redirect target fails.

      net1                      fwd                              net2
    veth1 ──────────── veth0 [l2fwd]         veth2 ──────────── veth3
                                             (the egress)
  and, beside it, the same program run by BPF_PROG_TEST_RUN with the same maps.

The one thing the live lab cannot show is a passed frame the kernel frees before any tap
(a VLAN-tagged frame too short to untag): there only the verdicts are compared.
"""
from __future__ import annotations

import pytest
from corpus import NAMED, NEW_MAC, ROUTED, random_frames

from lab.l2fwd.backends import L2fwdLive as LiveBackend
from lab.l2fwd.backends import L2fwdUnit as UnitBackend
from lab.l2fwd.forwarder import L2fwd
from lab.l2fwd.repro import l2fwd_on
from lab.l2fwd.seed import EGRESS
from lab.pace import share

RANDOM = random_frames(share(300, floor=60))
CORPUS = [f for frames in NAMED.values() for f in frames] + RANDOM


@pytest.mark.parametrize("mode", ["skb", "drv"])
def test_unit_and_live_agree_on_every_frame(lab, l2fwd_program, mode):
    egress = lab.iface(EGRESS).ifindex          # the unit backend takes any devmap key: the live one's
    with L2fwd(l2fwd_program) as unit_fwd:
        unit = UnitBackend(unit_fwd)
        unit.route(ROUTED, egress, NEW_MAC)
        expected = [unit.run(f) for f in CORPUS]
    with l2fwd_on(lab, mode, None, l2fwd_program) as live_fwd:           # peers: the core's rule
        live = LiveBackend(lab, live_fwd, mode)
        live.route(ROUTED, egress, NEW_MAC)
        got = [live.run(f) for f in CORPUS]

    diffs = []
    for i, (frame, u, v) in enumerate(zip(CORPUS, expected, got)):
        if u.verdict != v.verdict or u.target != v.target or (v.output is not None and u.output != v.output):
            diffs.append(f"frame {i} ({len(frame)} bytes {frame[:20].hex()}...): unit {u}, live {v}")
        elif v.output is None and u.output is not None:
            assert frame[12:14] in (b"\x81\x00", b"\x88\xa8") and len(frame) < 20, \
                f"frame {i}: live lost a passed frame that is not a short VLAN frame: {frame.hex()}"
    assert not diffs, f"{len(diffs)} of {len(CORPUS)} frames differ:\n" + "\n".join(diffs[:20])
    verdicts = {v: sum(o.verdict == v for o in expected) for v in ("pass", "redirect")}
    # of the random frames about 1 in 7 is routed and over half are passed (41 and 259 of 300)
    assert verdicts["redirect"] >= len(RANDOM) // 10 and verdicts["pass"] >= len(RANDOM) // 2, \
        f"the corpus must exercise both: {verdicts}"
