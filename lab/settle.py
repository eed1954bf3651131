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
  * `napi/DEV-ID`: a device whose NAPI runs threaded (`/sys/class/net/DEV/threaded`);
    `backlog_napi/N` (6.10+, PREEMPT_RT), `ktimers/N` (PREEMPT_RT's timer softirqs).
  * a qdisc of the lab's interfaces that holds frames (tbf, netem...: released by a
    timer); a veth has none by default (noqueue). A frame its timer has just released is
    between the queue and the next hop for microseconds: after such a qdisc held frames,
    the lab confirms once more 2 ms later.
  * each CPU's backlog (`/proc/net/softnet_stat`, 5.10+): empty.

So nothing the lab sent is still in flight when every such thread is asleep (S, I, or P:
parked for an offline CPU) and has not run between two reads (its state in /proc/PID/stat,
its context switches in /proc/PID/status), no qdisc of the lab holds a frame, and every
sender has returned. A negative check ("no frame arrived", "no counter moved") is then
decided at once; the clock is only a liveness bound for a kernel that never goes quiet
(another process's traffic keeping a CPU's softirq busy), and a check decided by it says so.

Where the lab cannot see where a frame is, it falls back to the clock (the check waits its
whole bound, as PTF's do) and says why: RPS on a lab interface (`rps_cpus`: the frame is
finished by an IPI on another CPU, no thread involved), a GRO flush timer
(`gro_flush_timeout`), a user-space process that forwards or sends frames (`lab.userspace`,
a process `lab.spawn` started and that is still running), kernel threads it cannot list (a
PID namespace: /proc/2 is not kthreadd, or a CPU without its ksoftirqd). Not seen at all: a
frame the stack holds for a neighbour to resolve (the lab's links have permanent
neighbours), a device a test made by hand (only the lab's interfaces are read).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from . import rtnl
from .pace import Bound

if TYPE_CHECKING:
    from .built import Lab

KTHREADD = 2
CARRIERS = ("ksoftirqd/", "cpumap/", "napi/", "backlog_napi/", "ktimers/")   # threads that carry frames on
IDLE = "SIP"                # asleep, idle kthread, parked (an offline CPU's)
SOFTNET = "/proc/net/softnet_stat"
SOFTNET_BACKLOG = 11        # its column with the CPU's backlog length (5.10+)
RELEASED_S = 0.002          # a qdisc's released frame reaches the next hop within this
T = TypeVar("T")
_listed: tuple[str | None, tuple[str, ...]] | None = None   # (kthreadd's children, CARRIERS) when last listed
_carriers: dict[int, str] = {}                     # pid -> name of the carriers among them
decided = {"quiet": 0, "clock": 0}                 # waits of this process, by how they ended (the summary)
waited = [0.0]                                      # seconds this process spent in wait_quiet (the bench)


@dataclass
class Quiet:
    """How a wait for the kernel to finish ended."""
    settled: bool                   # every frame-carrying context was seen idle
    waited: float                   # seconds
    busy: list[str] = field(default_factory=list)   # what was still busy when the bound passed
    rounds: int = 0
    interrupted: bool = False       # ended early by the caller's until()

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
    global _listed, _carriers
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
        _carriers = found
        _listed = (now, CARRIERS)
    return _carriers


def _thread_state(pid: int) -> tuple[str, bytes] | None:
    """(state letter, its context switches) of a thread; None if it is gone. The switches
    count every time it slept after running, on every kernel configuration (schedstat
    reads 0 0 0 before 5.14 without schedstats)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status", "rb") as f:
            runs = b"".join(line for line in f if b"ctxt_switches:" in line)
    except OSError:
        return None
    return chr(stat[stat.rindex(b")") + 2]), runs


def unseen() -> list[str]:
    """Why the carrier threads cannot be read here (empty: they can)."""
    try:
        with open(f"/proc/{KTHREADD}/comm") as f:
            name = f.read().strip()
    except OSError:
        name = ""
    if name != "kthreadd":
        return [f"the kernel's threads are not visible (/proc/{KTHREADD} is {name or 'absent'}, not kthreadd: a "
                "PID namespace?)"]
    have = {n for n in carriers().values() if n.startswith("ksoftirqd/")}
    missing = [c for c in online_cpus() if f"ksoftirqd/{c}" not in have]
    return [f"no ksoftirqd for CPU {', '.join(map(str, missing))}"] if missing else []


def online_cpus() -> list[int]:
    try:
        with open("/sys/devices/system/cpu/online") as f:
            spans = f.read().strip()
    except OSError:
        return sorted(os.sched_getaffinity(0))
    cpus: list[int] = []
    for span in filter(None, spans.split(",")):
        a, _, b = span.partition("-")
        cpus += range(int(a), int(b or a) + 1)
    return cpus


def _backlogs() -> list[str]:
    """CPUs whose backlog holds frames: /proc/net/softnet_stat's backlog length (column 12,
    with the CPU's number in column 13, from 5.10; older kernels have neither: not read)."""
    try:
        with open(SOFTNET) as f:
            rows = [line.split() for line in f]
    except OSError:
        return []
    return [f"CPU {int(row[SOFTNET_BACKLOG + 1], 16)}'s backlog holds {int(row[SOFTNET_BACKLOG], 16)} frame(s)"
            for row in rows if len(row) > SOFTNET_BACKLOG + 1 and int(row[SOFTNET_BACKLOG], 16)]


def _busy_qdiscs(lab: "Lab") -> list[str]:
    """The lab's interfaces whose qdisc holds frames."""
    busy = []
    for ns in lab.namespaces.values():
        mine = {i.ifindex: i for i in lab.interfaces.values() if i.ns is ns}
        if not mine:
            continue
        busy += [f"{mine[q.ifindex].key}'s {q.kind} qdisc holds {q.qlen} frame(s)" for q in rtnl.qdiscs(ns)
                 if q.ifindex in mine and q.qlen]
    return busy


def _sysfs_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    try:
        return int(text.replace(",", ""), 16) if path.endswith("rps_cpus") else int(text)
    except ValueError:
        return None


def unseeable(lab: "Lab") -> list[str]:
    """What of the lab holds or moves frames where the threads' states cannot show it: a GRO
    flush timer, RPS, a user-space forwarder, a process lab.spawn started that still runs."""
    held = []
    for i in lab.interfaces.values():
        base = os.path.join(i.ns.sysfs, "class/net", i.name)
        timeout = _sysfs_int(os.path.join(base, "gro_flush_timeout"))
        if timeout:
            held.append(f"{i.key} has gro_flush_timeout {timeout} ns (GRO holds frames on a timer)")
        try:
            rx = [d for d in os.listdir(os.path.join(base, "queues")) if d.startswith("rx-")]
        except OSError:
            rx = []
        if any(_sysfs_int(os.path.join(base, "queues", q, "rps_cpus")) for q in rx):
            held.append(f"{i.key} steers frames to other CPUs (RPS: rps_cpus), finished there by an interrupt")
    if lab.userspace:
        held.append(f"{lab.userspace} may hold frames (lab.userspace)")
    held += [f"{what} is running and may send frames (lab.spawn(..., sends_frames=False) if it does not)"
             for what, proc in lab.senders if proc.poll() is None]
    return held


def threads_busy(before: dict[int, tuple[str, bytes]] | None) -> tuple[list[str], dict[int, tuple[str, bytes]]]:
    """The carrier threads running now, or that ran since `before`; and their states now."""
    states = {pid: s for pid, s in ((pid, _thread_state(pid)) for pid in carriers()) if s is not None}
    busy = []
    for pid, (state, runs) in states.items():
        if state not in IDLE:
            busy.append(f"{_carriers[pid]} is running (state {state})")
        elif before is not None and before.get(pid, (state, runs))[1] != runs:
            busy.append(f"{_carriers[pid]} ran")
    return busy, states


def wait_quiet(labs: Iterable["Lab"], bound: Bound, until: "Callable[[], bool] | None" = None) -> Quiet:
    """Wait until the kernel has finished with every frame sent so far (see the module's
    docstring), at most until `bound` expires (on the machine's pace): the threads idle,
    then the qdiscs and backlogs empty, then the threads idle still and not run in between.
    `until()`, asked every round, ends the wait early (the caller's frames arrived)."""
    started = time.monotonic()
    try:
        return _wait_quiet(list(labs), started, bound, until)
    finally:
        waited[0] += time.monotonic() - started


def _wait_quiet(labs: list["Lab"], started: float, bound: Bound, until: "Callable[[], bool] | None") -> Quiet:
    held = unseen() + [t for lab in labs for t in unseeable(lab)]
    rounds, queued = 0, False
    while True:
        rounds += 1
        busy, states = threads_busy(None)
        if not busy:
            busy = [q for lab in labs for q in _busy_qdiscs(lab)] + _backlogs()
            queued = queued or any("qdisc" in b for b in busy)
            if not busy and queued:
                time.sleep(RELEASED_S)      # a frame its timer just released, on its way to the next hop
                busy = _backlogs()
            if not busy:
                busy, _ = threads_busy(states)
                if not busy and not held:
                    decided["quiet"] += 1
                    return Quiet(True, time.monotonic() - started, rounds=rounds)
        if until is not None and until():
            return Quiet(False, time.monotonic() - started, busy + held, rounds, interrupted=True)
        if bound.expired():
            decided["clock"] += 1
            return Quiet(False, time.monotonic() - started, busy + held, rounds)
        time.sleep(0.0005 if not held else 0.005)


def settled_read(labs: Iterable["Lab"], read: "Callable[[], T]", ok: "Callable[[T], bool]", bound: float) -> T:
    """`read()` again until `ok(value)` holds, then once more when the kernel is quiet (a frame
    still in flight could change it: the value is then final); or until the liveness bound
    passes (`bound` seconds x pace.slowdown()). Returns the last value read: the caller asserts."""
    labs, limit = list(labs), Bound(bound)
    while True:
        value = read()
        if ok(value):
            wait_quiet(labs, limit)
            return read()
        if limit.expired():
            return value
        time.sleep(0.002)
