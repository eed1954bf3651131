"""Two ways to run the same frames through a forwarder, with one answer per frame.

    live   the frame is sent from net1 into the lab's topology; what the forwarder decided
           is read from its verdict counters, the frame it left from where it shows up: on
           the peer of an egress interface (redirect), on the ingress tap (pass), on net1
           (tx), nowhere (drop, aborted).
    unit   BPF_PROG_TEST_RUN runs the program on the frame: no namespace, no attach, the
           kernel's own verdict and output bytes; nothing is transmitted.

Both report an `Outcome`: the verdict, the output frame, and for a redirect the target,
as the ifindex the frame went out of (live) or the key the program recorded (unit: a program
with a `redirect_key` map records the key of each redirect it asks for; BPF_PROG_TEST_RUN
itself does not say where a redirect would have gone, and this kernel has neither kprobes
nor fentry to watch the helper). Any XDP program works: one with a `verdicts()` method
(the l2fwd kit's) is read from its counters; for any other the live verdict is where the
frame went, with the kernel's run count proving the program saw it. Kits add `route()`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import bpfsys
from .errors import LabError
from .packets import udp_frame
from .programs import XdpProgram

if TYPE_CHECKING:
    from .built import Lab

ACTIONS = ("aborted", "drop", "pass", "tx", "redirect")     # XDP action numbers 0..4


@dataclass(frozen=True)
class Outcome:
    verdict: str                # aborted, drop, pass, tx, redirect
    output: bytes | None        # the frame as the program left it; None when dropped
    target: int | None = None   # redirect: the ifindex (txport_map key) or xsk queue chosen

    def __str__(self) -> str:
        where = f" to {self.target}" if self.target is not None else ""
        return f"{self.verdict}{where}, {len(self.output) if self.output is not None else 0} bytes out"


def _redirect_target(fwd: XdpProgram) -> int | None:
    """The key the program recorded for its last redirect (None if it recorded none)."""
    if "redirect_key" not in fwd.maps:
        return None
    for slot in (0, 1):
        for v in fwd.map("redirect_key").lookup_percpu(slot.to_bytes(4, "little")) or []:
            key = int.from_bytes(v, "little")
            if key:
                return key - 1
    return None


def _reset_redirect_target(fwd: XdpProgram) -> None:
    if "redirect_key" in fwd.maps:
        fwd.map("redirect_key").clear()


class UnitBackend:
    """The forwarder run by BPF_PROG_TEST_RUN (not attached anywhere)."""
    name = "unit"

    def __init__(self, fwd: XdpProgram) -> None:
        self.fwd = fwd

    def run(self, frame: Any) -> Outcome:      # Any: bytes or a scapy packet (scapy is untyped)
        _reset_redirect_target(self.fwd)
        retval, out = bpfsys.test_run(self.fwd.fd, bytes(frame))
        verdict = ACTIONS[retval] if retval < len(ACTIONS) else f"action {retval}"
        if verdict in ("drop", "aborted"):
            return Outcome(verdict, None)
        return Outcome(verdict, out, _redirect_target(self.fwd) if verdict == "redirect" else None)


class LiveBackend:
    """The program attached in the lab, frames sent from the peer of its first attachment.
    A marker frame addressed to the attached interface's own IPv4 address follows each
    frame: the program must pass it (as l2fwd does with frames for its own host)."""

    def __init__(self, lab: "Lab", fwd: XdpProgram, mode: str) -> None:
        self.lab, self.fwd, self.mode = lab, fwd, mode
        self.name = f"live-{mode}"
        ingress = fwd.attachments[0].iface
        self.port = lab.port(lab.peer(ingress.key).key)
        self.tap = lab.capture(ingress.key)
        self.back = lab.capture(lab.peer(ingress.key).key)       # XDP_TX comes back here
        self.egress = {i.ifindex: lab.capture(lab.peer(i.key).key)
                       for i in lab.interfaces.values() if i.ns is ingress.ns and i is not ingress}
        sender = lab.peer(ingress.key)
        if not ingress.ip or not sender.ip:
            raise LabError(f"run frames through {fwd.name} live", f"{ingress.key} or {sender.key} has no IPv4 address "
                           "for the marker frame", "give both ends of the ingress veth an address")
        self.marker = bytes(udp_frame(eth_src=sender.mac, eth_dst=ingress.mac, ip_src=sender.ip, ip_dst=ingress.ip,
                                      payload=b"xdplab-marker"))

    def _verdicts(self) -> dict[str, int]:
        counted = getattr(self.fwd, "verdicts", None)
        if counted is not None:
            return dict(counted())
        return {"runs": self.fwd.run_stats()[0]}

    def run(self, frame: Any) -> Outcome:      # Any: bytes or a scapy packet (scapy is untyped)
        """Send `frame`, then a marker that the forwarder passes: frames leave each queue in
        order, so once the marker is on the tap, `frame` has been decided and delivered."""
        raw = bytes(frame)
        before = self._verdicts()
        for c in (self.tap, self.back, *self.egress.values()):
            c.poll()
            c.pending.clear()
        self.port.send_each([raw, self.marker])
        deadline = time.monotonic() + 5
        while self.marker not in self.tap.pending:
            if time.monotonic() > deadline:
                raise LabError(f"run a frame through {self.name}", "the marker frame never reached the ingress tap",
                               "is the forwarder passing 192.168.1.1? see the failure report")
            self.tap.poll(0.01)
        for c in (self.back, *self.egress.values()):
            c.poll()
        delta = {k: v - before[k] for k, v in self._verdicts().items()}
        if "runs" in delta:
            verdict = self._where_it_went(raw, delta["runs"])
        else:
            delta["pass"] -= 1                                           # the marker
            decided = [k for k in ACTIONS if delta[k]]
            if len(decided) != 1 or delta[decided[0]] != 1:
                raise LabError(f"run a frame through {self.name}", f"verdict counters moved by {delta}",
                               "another sender is using the lab's interfaces?")
            verdict = decided[0]
        if verdict == "redirect":
            for ifindex, cap in self.egress.items():
                if cap.pending:
                    return Outcome(verdict, cap.pending.pop(0), ifindex)
            return Outcome(verdict, None, None)                      # redirected, and lost
        if verdict == "pass":
            seen = [f for f in self.tap.pending if f != self.marker]
            return Outcome(verdict, seen[0] if seen else None)        # None: freed before any tap
        if verdict == "tx":
            return Outcome(verdict, self.back.pending[0] if self.back.pending else None)
        return Outcome(verdict, None)

    def _where_it_went(self, raw: bytes, runs: int) -> str:
        """The verdict of a program without verdict counters, from where the frame showed up;
        the run count (frame + marker = 2) proves the program saw it."""
        if runs != 2:
            raise LabError(f"run a frame through {self.name}", f"the program ran {runs} times for a frame and the "
                           "marker, not 2", "another sender is using the lab's interfaces?")
        if any(cap.pending for cap in self.egress.values()):
            return "redirect"
        if [f for f in self.tap.pending if f != self.marker]:
            return "pass"
        if self.back.pending:
            return "tx"
        return "drop"           # dropped or aborted: only the kernel's fates tell the two apart
