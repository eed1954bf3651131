"""Reproductions of vanishing frames, shared by scenarios/ (which assert) and
`python -m lab repro` (which prints): one topology, one setup, one send, one observation.

Every case sends frames from net1 to 192.168.0.1 through l2fwd on fwd/veth0 (the seed
topology) and observes the egress capture, the forwarder's verdicts and every counter.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..built import Lab
from ..counters import Delta
from ..fates import Fates, FatesError
from ..pace import Bound
from ..peers import attached
from ..programs import Program
from .forwarder import L2FWD, L2fwd
from .seed import EGRESS, INGRESS, RECEIVER, ROUTED, SEED, SEED_MAC, SENDER, go_seed_bytes, seed_frame  # noqa: F401 - re-exported for the repro's users


@contextlib.contextmanager
def l2fwd_on(lab: Lab, mode: str, peer: str | None = None, program: Program = L2FWD,
             at: str = INGRESS) -> Iterator[L2fwd]:
    """l2fwd attached to `at` in `mode`, the redirect targets' peers set up as `peer` (default:
    the core's rule), registered with the lab for preflight and report; undone on exit."""
    with L2fwd(program) as fwd, attached(lab, fwd, at, mode, peer):
        yield fwd


@dataclass
class Observation:
    """What happened to `sent` frames: at the egress, in the program, on every counter."""
    sent: int
    frame_len: int
    arrived: list[bytes]
    verdicts: dict[str, int]
    delta: Delta
    fates: Fates | None = None         # what the kernel reported meanwhile (None: not recorded here)
    fates_before: Fates | None = None  # the mark it is counted from (for assert_fates)
    notes: list[str] = field(default_factory=list)


def send_and_observe(lab: Lab, l2fwd: L2fwd, frames: int, *, frame: Any = None) -> Observation:   # Any: scapy or bytes
    """Send `frames` copies of the seed frame from net1, then collect what arrived on
    net2/veth3, the verdicts and the counter deltas of every interface."""
    frame = frame if frame is not None else seed_frame(lab)
    egress = lab.capture(RECEIVER)
    before = lab.snapshot()
    try:
        fates_before: Fates | None = lab.fates()
    except FatesError:
        fates_before = None      # the Observation says so: fates None
    lab.port(SENDER).send(frame, count=frames)
    # every frame has been decided by the program once the verdicts add up, and has reached
    # its end once the kernel is quiet (lab.settle: no fixed wait for frames that never come)
    bound = Bound(2)
    while sum(v for k, v in l2fwd.verdicts().items() if k != "malformed") < frames and not bound.expired():
        time.sleep(0.001)
    lab.settle()
    egress.poll()
    fates = lab.fates() - fates_before if fates_before is not None else None
    return Observation(frames, len(bytes(frame)), list(egress.received), l2fwd.verdicts(), before.again() - before,
                       fates, fates_before)


# --- `python -m lab repro`: the same cases, printed for a person --------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    summary: str
    mode: str
    peer: str
    routes: str            # "route" (both maps), "no-txport", "go-layout"
    explain: str           # what the kernel did; {n} and {arrived} are filled in


CASES = {c.name: c for c in (
    Case("native-redirect-no-peer", "drv-mode redirect into a veth whose peer has no XDP program and GRO off",
         "drv", "none", "route",
         "The program redirected all {n} frames (verdicts), but a veth accepts XDP-redirected frames only while "
         "its peer runs NAPI (an XDP program or GRO on the peer). fwd/veth2's XDP features lack ndo-xmit, so the "
         "redirect fails inside the driver and this kernel counts the loss on the INGRESS veth0: rx_dropped and "
         "ethtool's rx_queue_0_drops. {arrived} frames reached net2. Fix: xdp_pass on net2/veth3, GRO on there, or "
         "skb mode (the seed's XdpFlags 2)."),
    Case("native-redirect-pass-peer", "the fix: xdp_pass attached to the peer in drv mode", "drv", "pass", "route",
         "With an XDP program on net2/veth3, veth2 advertises ndo-xmit and takes the redirected xdp_frames: "
         "{arrived} of {n} frames arrived, counted whole on veth2 (tx, tx_queue_0_xdp_xmit) and veth3; no drop "
         "counter moved."),
    Case("native-redirect-gro-peer", "the fix without a program: GRO on the peer", "drv", "gro", "route",
         "GRO on net2/veth3 turns on its NAPI as an XDP program would: {arrived} of {n} frames arrived."),
    Case("generic-redirect", "the seed's fix: attach in skb mode (XDP_FLAGS_SKB_MODE = 2, xdpgeneric)",
         "skb", "none", "route",
         "Generic XDP redirects skbs through the normal transmit path, which any veth accepts: {arrived} of {n} "
         "frames arrived with the rewritten MAC. No drop counter moved."),
    Case("missing-txport", "l2fwd_map routes to outif, txport_map has no entry for it", "drv", "pass", "no-txport",
         "bpf_redirect_map found no entry and returned its flags, 0 = XDP_ABORTED: the verdicts show {n} aborted. "
         "In drv mode only ethtool's rx_queue_0_xdp_drops counts them; in skb mode no interface counter does "
         "(the xdp:xdp_exception tracepoint fires). {arrived} frames arrived."),
    Case("layout-bug", "the seed's control plane: l2fwd_map value written from a Go struct with an 8-byte int",
         "skb", "none", "go-layout",
         "The map holds 12 bytes, so the kernel kept the first 12 of the Go struct's 16. The program reads "
         "dst_mac at offset 4, the upper half of the 8-byte int: {arrived} of {n} frames reached net2 with "
         "destination 00:00:00:00:00:00. veth3 counts them as received; net2's stack drops them as not for this "
         "host, and no interface counter shows that. Fix: Outif uint32 (the struct is then 12 bytes)."),
)}


def run_case(case: Case, frames: int = 1000) -> tuple[Observation, str]:
    """Build the seed topology, run `case`, tear everything down; return what was seen and
    the explanation."""
    from ..built import build
    with build(SEED, fates="paths") as lab, l2fwd_on(lab, case.mode, case.peer) as fwd:
        veth2 = lab.iface(EGRESS)
        if case.routes == "route":
            fwd.route(ROUTED, via=veth2, mac=SEED_MAC)
        elif case.routes == "no-txport":
            fwd.set_l2fwd(ROUTED, veth2, SEED_MAC)
        else:
            fwd.set_txport(veth2)
            fwd.set_l2fwd_raw(ROUTED, go_seed_bytes(veth2.ifindex))
        o = send_and_observe(lab, fwd, frames)
        o.notes.append(fwd.map("l2fwd_map").dump())
    return o, case.explain.format(n=frames, arrived=len(o.arrived))


def assert_passed_up(lab: Lab, fwd: L2fwd, frame: Any, mode: str, count: int) -> None:   # Any: bytes or scapy
    """Send `count` copies of `frame` from net1 and assert that l2fwd passed them all up fwd's
    stack: the tap on fwd/veth0 sees each (taps see passed frames after XDP), net2 sees none,
    the verdicts are exactly `pass` x count, and only the hop's counters moved."""
    from ..counters import assert_counters, veth_hop
    from .forwarder import assert_verdicts
    egress, tap = lab.capture(RECEIVER), lab.capture(INGRESS)
    before = lab.snapshot()
    lab.port(SENDER).send(frame, count=count)
    tap.expect(frame, count=count)
    egress.expect_none()
    assert_verdicts(fwd, {"pass": count})
    assert_counters(before, veth_hop(mode, count, count * len(bytes(frame)), SENDER, INGRESS))
