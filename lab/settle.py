"""Settling: when the kernel has finished with every frame the lab sent, decided without a clock.

A frame sent on a veth (an AF_PACKET send, a forward by the stack, an XDP redirect) is carried
on by the kernel in softirq context, on the CPU that sent it: `veth_xmit` queues it to the
peer (the CPU's backlog in skb mode, the peer's ring and NAPI in drv mode) and raises
NET_RX, which runs when the sender re-enables bottom halves, before its system call returns,
hop after hop (redirects are flushed at the end of each NAPI poll and schedule the next
veth's NAPI on the same CPU). The work leaves that path only to a thread, and the lab
watches each kind:

  * `ksoftirqd/N`: NET_RX handed over when a CPU's softirq ran over its budget (or the
    thread was already running). It sleeps only when no softirq is pending on its CPU.
  * `cpumap/N/map:ID`: frames redirected into a cpumap, run on the chosen CPU.
  * `napi/DEV-ID`: a device whose NAPI runs threaded (`/sys/class/net/DEV/threaded`).
  * a qdisc of the lab's interfaces that holds frames (netem, tbf, fq...: released by a
    timer); a veth has none by default (noqueue).

So nothing the lab sent is still in flight when every such thread is asleep and has not run
between two reads (its state in /proc/PID/stat, its run count in /proc/PID/schedstat), no
qdisc of the lab holds a frame, and every sender has returned. A negative check ("no frame
arrived", "no counter moved") is then decided at once; the clock is only a liveness bound for
a kernel that never goes quiet (another process's traffic keeping a CPU's softirq busy), and
a check decided by it says so. What the lab cannot see: a frame a user-space process holds
(an AF_XDP forwarder of the user's own), a GRO flush timer (`gro_flush_timeout` set on an
interface: the lab falls back to the clock there and says why), a frame waiting for a
neighbour to resolve (the lab's links have permanent neighbours). A lab whose frames pass
through a user-space process (an AF_XDP forwarder) says so in `lab.userspace` (a name for
it): its checks then wait their whole bound, as PTF's do.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from .pace import scaled

if TYPE_CHECKING:
    from .built import Lab

KTHREADD = 2
CARRIERS = ("ksoftirqd/", "cpumap/", "napi/")      # kernel threads that carry frames on
T = TypeVar("T")
_listed: tuple[str | None, tuple[str, ...]] | None = None   # (kthreadd's children, CARRIERS) when last listed
_carriers: dict[int, str] = {}                     # pid -> name of the carriers among them
decided = {"quiet": 0, "clock": 0}                 # waits of this process, by how they ended (the summary)


@dataclass
class Quiet:
    """How a wait for the kernel to finish ended."""
    settled: bool                   # every frame-carrying context was seen idle
    waited: float                   # seconds
    busy: list[str] = field(default_factory=list)   # what was still busy when the bound passed
    rounds: int = 0

    def __str__(self) -> str:
        if self.settled:
            return f"the kernel was quiet after {self.waited * 1000:.1f} ms"
        return (f"the kernel was not quiet after {self.waited:.2f} s ({'; '.join(self.busy)}): decided by the "
                "clock")


def _list_children() -> list[int]:
    try:
        with open(f"/proc/{KTHREADD}/task/{KTHREADD}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:                 # a kernel without CONFIG_PROC_CHILDREN: every kthreadd child
        pids = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat", "rb") as f:
                        stat = f.read()
                except OSError:
                    continue
                if int(stat[stat.rindex(b")") + 2:].split()[1]) == KTHREADD:
                    pids.append(int(d))
        return pids


def carriers() -> dict[int, str]:
    """pid -> name of every kernel thread that can carry a frame on (listed again only when
    kthreadd's children changed: a cpumap entry starts a thread)."""
    global _listed
    try:
        with open(f"/proc/{KTHREADD}/task/{KTHREADD}/children") as f:
            now: str | None = f.read()
    except OSError:
        now = None
    if now is None or (now, CARRIERS) != _listed:
        found = {}
        for pid in _list_children():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    name = f.read().strip()
            except OSError:
                continue
            if name.startswith(CARRIERS):
                found[pid] = name
        _carriers.clear()
        _carriers.update(found)
        _listed = (now, CARRIERS)
    return _carriers


def _thread_state(pid: int) -> tuple[str, bytes] | None:
    """(state letter, how much it has run) of a thread; None if it is gone. How much it ran:
    /proc/PID/schedstat (CONFIG_SCHED_INFO), else its context switches in /proc/PID/status."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        try:
            with open(f"/proc/{pid}/schedstat", "rb") as f:
                runs = f.read()
        except FileNotFoundError:
            with open(f"/proc/{pid}/status", "rb") as f:
                runs = b"".join(line for line in f if b"ctxt_switches:" in line)
    except OSError:
        return None
    return chr(stat[stat.rindex(b")") + 2]), runs


def _busy_qdiscs(lab: "Lab") -> list[str]:
    """The lab's interfaces whose qdisc holds frames."""
    busy = []
    for name, ns in lab.namespaces.items():
        mine = {i.ifindex: i for i in lab.interfaces.values() if i.ns is ns}
        if not mine:
            continue
        for q in ns.ipr.get_qdiscs():
            if q["index"] not in mine or q.get_attr("TCA_KIND") in ("noqueue", None):
                continue
            stats = q.get_attr("TCA_STATS")
            if stats and stats["qlen"]:
                busy.append(f"{mine[q['index']].key}'s {q.get_attr('TCA_KIND')} qdisc holds {stats['qlen']} "
                            "frame(s)")
    return busy


def _timers(lab: "Lab") -> list[str]:
    """The lab's interfaces that hold frames on a GRO flush timer (unseen by the threads' states)."""
    held = []
    for i in lab.interfaces.values():
        try:
            with open(os.path.join(i.ns.sysfs, "class/net", i.name, "gro_flush_timeout")) as f:
                ns_ = int(f.read())
        except (OSError, ValueError):
            continue
        if ns_:
            held.append(f"{i.key} has gro_flush_timeout {ns_} ns (GRO holds frames on a timer the lab cannot see)")
    return held


def _threads(before: dict[int, tuple[str, bytes]] | None) -> tuple[list[str], dict[int, tuple[str, bytes]]]:
    """The carrier threads running now, or that ran since `before`; and their states now."""
    states = {pid: s for pid, s in ((pid, _thread_state(pid)) for pid in carriers()) if s is not None}
    busy = []
    for pid, (state, runs) in states.items():
        if state not in "SI":
            busy.append(f"{_carriers[pid]} is running (state {state})")
        elif before is not None and before.get(pid, (state, runs))[1] != runs:
            busy.append(f"{_carriers[pid]} ran")
    return busy, states


def busy_now(labs: Iterable["Lab"], before: dict[int, tuple[str, bytes]] | None = None
             ) -> tuple[list[str], dict[int, tuple[str, bytes]]]:
    """What is busy with frames now: threads running, or that ran since `before`, and the
    labs' qdiscs holding frames. Returns (descriptions, the threads' states now)."""
    busy, states = _threads(before)
    for lab in labs:
        busy += _busy_qdiscs(lab)
    return busy, states


def wait_quiet(labs: Iterable["Lab"], seconds: float) -> Quiet:
    """Wait until the kernel has finished with every frame sent so far (see the module's
    docstring), at most `seconds` (already scaled to the machine's pace): the threads idle,
    then the qdiscs empty, then the threads idle still and not run in between."""
    labs = list(labs)
    started = time.monotonic()
    deadline = started + seconds
    held = [t for lab in labs for t in _timers(lab)]
    held += [f"{lab.userspace} may hold frames (lab.userspace)" for lab in labs if lab.userspace]
    rounds = 0
    while True:
        rounds += 1
        busy, states = _threads(None)
        if not busy:
            busy = [q for lab in labs for q in _busy_qdiscs(lab)]
            if not busy:
                busy, _ = _threads(states)
                if not busy and not held:
                    decided["quiet"] += 1
                    return Quiet(True, time.monotonic() - started, rounds=rounds)
        if time.monotonic() > deadline:
            decided["clock"] += 1
            return Quiet(False, time.monotonic() - started, busy + held, rounds)
        time.sleep(0.0005 if not held else 0.01)


def settled_read(labs: Iterable["Lab"], read: "Callable[[], T]", ok: "Callable[[T], bool]", bound: float) -> T:
    """`read()` again until `ok(value)` holds, then once more when the kernel is quiet (a frame
    still in flight could change it: the value is then final); or until the liveness bound
    passes (`bound` seconds x pace.slowdown()). Returns the last value read: the caller asserts."""
    labs = list(labs)
    deadline = time.monotonic() + scaled(bound)
    while True:
        value = read()
        if ok(value):
            wait_quiet(labs, max(0.0, deadline - time.monotonic()))
            return read()
        if time.monotonic() > deadline:
            return value
        time.sleep(0.002)
