"""Named points in the lab's multi-step operations where a test can kill the process.

`XDPLAB_KILL_AT=<point>[#<n>]` makes the process SIGKILL itself the n-th time (default the
first) it reaches `<point>`: the kill tests use it to stop `lab up` and `lab down` at every
step, deterministically, and then check that `lab down` / `lab clean` recover.
`XDPLAB_STOP_AT` sends SIGSTOP instead (a test holds the process there, then SIGCONTs it).
Unset, a point costs two environment lookups.
"""
from __future__ import annotations

import os
import signal

SIGNALS = {"XDPLAB_KILL_AT": signal.SIGKILL, "XDPLAB_STOP_AT": signal.SIGSTOP}
_seen: dict[str, int] = {}


def reached(point: str) -> None:
    for env, sig in SIGNALS.items():
        want = os.environ.get(env)
        if not want:
            continue
        name, _, nth = want.partition("#")
        if name != point:
            continue
        _seen[env + point] = _seen.get(env + point, 0) + 1
        if _seen[env + point] == int(nth or 1):
            os.kill(os.getpid(), sig)
