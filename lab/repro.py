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

from . import ethtool
from .counters import Delta
from .forwarder import L2FWD, XDP_PASS, Forwarder, L2fwd, Program
from .packets import udp_frame
from .topology import Interface, Lab

PEERS = ("none", "pass", "gro")
ROUTED = "192.168.0.1"
SEED_MAC = "00:00:11:22:33:44"


def prepare_peer(lab: Lab, target: Interface, how: str, pass_prog: Forwarder) -> None:
    """Set up the peer of redirect target `target`: "none" (as built), "pass" (xdp_pass in
    drv mode) or "gro" (GRO on). Undone with the lab."""
    peer = lab.peer(target.key)
    if how == "pass":
        pass_prog.attach(peer, "drv")
    elif how == "gro":
        ethtool.set_gro(peer, True)
        lab.on_close(f"turn GRO off on {peer.key}", lambda: ethtool.set_gro(peer, False))
    elif how != "none":
        raise ValueError(f"prepare peer of {target.key}: unknown setup {how!r}; use one of {', '.join(PEERS)}")


@contextlib.contextmanager
def l2fwd_on(lab: Lab, mode: str, peer: str, program: Program = L2FWD, at: str = "fwd/veth0") -> Iterator[L2fwd]:
    """l2fwd attached to `at` in `mode`, the peers of the other interfaces of its namespace
    (the redirect targets') set up as `peer`, the forwarder registered with the lab for
    the failure report. Everything is undone on exit, last made first."""
    where = lab.iface(at)
    peers = Forwarder(XDP_PASS)
    try:
        fwd = L2fwd(program)
        try:
            for i in lab.interfaces.values():
                if i.nsname == where.nsname and i is not where:
                    prepare_peer(lab, i, peer, peers)
            fwd.attach(where, mode)
            lab.forwarders.append(fwd)
            yield fwd
        finally:
            fwd.close()
    finally:
        peers.close()


def seed_frame(lab: Lab, ip_dst: str = ROUTED) -> object:
    return udp_frame(eth_src=lab.iface("net1/veth1").mac, eth_dst=lab.iface("fwd/veth0").mac,
                     ip_src="192.168.1.2", ip_dst=ip_dst)


@dataclass
class Observation:
    """What happened to `sent` frames: at the egress, in the program, on every counter."""
    sent: int
    frame_len: int
    arrived: list[bytes]
    verdicts: dict[str, int]
    delta: Delta
    notes: list[str] = field(default_factory=list)


def send_and_observe(lab: Lab, l2fwd: L2fwd, frames: int, *, settle: Callable[[Delta], bool] | None = None,
                     frame: object = None) -> Observation:
    """Send `frames` copies of the seed frame from net1, then collect what arrived on
    net2/veth3, the verdicts and the counter deltas of every interface."""
    frame = frame if frame is not None else seed_frame(lab)
    egress = lab.capture("net2/veth3")
    before = lab.snapshot()
    lab.port("net1/veth1").send(frame, count=frames)
    # every frame has been decided by the program once the verdicts add up
    deadline = time.monotonic() + 2
    while sum(v for k, v in l2fwd.verdicts().items() if k != "malformed") < frames and time.monotonic() < deadline:
        time.sleep(0.001)
    egress.poll(0.2)
    egress.poll()
    return Observation(frames, len(bytes(frame)), list(egress.received), l2fwd.verdicts(), before.again() - before)
