"""How fast this machine runs the lab, against the machine its time budgets were set on.

Every bound the lab waits on (a frame expected within 2 s, counters that settle, pytest's
per-test timeout) was measured on a 2-core machine running its kernel natively. Inside a
kernel-matrix guest under software emulation the same work takes 3-10 x as long, and a
bound that does not follow would fail a scenario because the guest is slow, not because a
frame vanished. `slowdown()` times a small fixed workload (Python, system calls, file
look-ups) once per process and divides by what it took on the reference machine; the
bounds are multiplied by it, and the number of random cases a scenario draws (hypothesis
examples, a generated corpus) is divided by it, down to a floor: a guest spends about the
wall time the reference machine does. XDPLAB_SLOWDOWN=N sets it (the matrix passes none:
each guest measures itself).
"""
from __future__ import annotations

import os
import time

REFERENCE_S = 0.012           # the workload below on the reference machine (2 cores, kernel 6.18: 9-12 ms)
NATIVE = 2.0                  # below this, noise (a busy core, xdist workers): bounds stay as written
_measured: float | None = None


def _workload() -> None:
    total = 0
    for i in range(100_000):          # interpreter speed
        total += i & 7
    for _ in range(300):              # system calls and look-ups in /proc and /sys
        os.stat("/proc/self/stat")
        os.stat("/sys/class/net")
        os.getppid()


def slowdown() -> float:
    """How many times slower than the reference machine this one is (at least 1)."""
    global _measured
    if _measured is None:
        forced = os.environ.get("XDPLAB_SLOWDOWN")
        if forced:
            try:
                _measured = max(1.0, float(forced))
            except ValueError:
                raise SystemExit(f"xdplab: XDPLAB_SLOWDOWN={forced!r} is not a number; give e.g. 4") from None
        else:
            best = float("inf")
            for _ in range(3):            # the best of three: a busy moment does not count
                t = time.perf_counter()
                _workload()
                best = min(best, time.perf_counter() - t)
            ratio = round(best / REFERENCE_S, 1)
            _measured = ratio if ratio >= NATIVE else 1.0
    return _measured


def scaled(seconds: float) -> float:
    """`seconds` as a bound on this machine."""
    return seconds * slowdown()


class Bound:
    """A liveness bound of `seconds` as written (the reference machine's), started now. The
    machine's pace is asked for only once the written bound has passed: a wait that ends in
    time never measures it (a command such as `lab up` saves the ~36 ms the measure takes)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.started = seconds, time.monotonic()

    def left(self) -> float:
        """Seconds left (0 once expired), on this machine's pace."""
        spent = time.monotonic() - self.started
        if spent < self.seconds:
            return self.seconds * (slowdown() if _measured is not None else 1.0) - spent
        return max(0.0, scaled(self.seconds) - spent)

    def expired(self) -> bool:
        return self.left() <= 0


def share(cases: int, floor: int) -> int:
    """How many of `cases` random cases a run on this machine draws: `cases` on the reference
    machine, fewer in a slow guest (the same wall time), never fewer than `floor`."""
    return max(floor, min(cases, round(cases / slowdown())))
