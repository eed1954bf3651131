"""Find and remove what a dead lab process left behind, and nothing else.

Every namespace the lab creates is first recorded in /run/xdplab/owners/<name> with its
owner's pid and start time (so a recycled pid is not mistaken for the owner). A SIGKILLed
worker leaves namespaces (and the veths, XDP attachments and sysfs mounts inside them);
the sweep removes the recorded namespaces whose owner is gone. A namespace without a
record is never touched, whatever its name: someone else made it.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
from dataclasses import dataclass

from .netns import MNT_DETACH, NETNS_RUN_DIR, SYSFS_DIR

OWNERS_DIR = "/run/xdplab/owners"
_libc = ctypes.CDLL(None, use_errno=True)


def _starttime(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])     # field 22: start time in clock ticks


def record(nsname: str, owner: str | None = None) -> None:
    """Record the owner of namespace `nsname` (before creating it): this process, or a lab
    left running by `python -m lab up` ("up:<lab>"), which no sweep removes but --force."""
    os.makedirs(OWNERS_DIR, exist_ok=True)
    pid = os.getpid()
    path = os.path.join(OWNERS_DIR, nsname)
    with open(f"{path}.{pid}.tmp", "w") as f:
        f.write(f"{owner} 0\n" if owner else f"{pid} {_starttime(pid)}\n")
    os.replace(f"{path}.{pid}.tmp", path)     # a sweeper never reads half a record


def forget(nsname: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(OWNERS_DIR, nsname))


@dataclass(frozen=True)
class Leftover:
    netns: str
    pid: int
    alive: bool
    owner: str = ""         # "up:<lab>" for a lab left running on purpose


def leftovers() -> list[Leftover]:
    """Every recorded namespace, with whether its owner still runs."""
    out = []
    try:
        names = sorted(os.listdir(OWNERS_DIR))
    except FileNotFoundError:
        return []
    for name in names:
        if name.endswith(".tmp"):
            continue
        try:
            with open(os.path.join(OWNERS_DIR, name)) as f:
                pid_s, start_s = f.read().split()
        except (OSError, ValueError):
            continue        # gone meanwhile, or not a record of ours: never a reason to delete
        if pid_s.startswith("up:"):
            out.append(Leftover(name, 0, True, pid_s))
            continue
        pid = int(pid_s)
        out.append(Leftover(name, pid, str(_starttime(pid)) == start_s))
    return out


def remove(nsname: str) -> None:
    """Remove a recorded namespace: its sysfs view, its bind mount, its record. Deleting the
    namespace deletes its veths (and their peers) and with them their XDP attachments."""
    for path in (os.path.join(SYSFS_DIR, nsname), os.path.join(NETNS_RUN_DIR, nsname)):
        _libc.umount2(path.encode(), MNT_DETACH)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.join(SYSFS_DIR, nsname))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(NETNS_RUN_DIR, nsname))
    forget(nsname)


def sweep(include_live: bool = False) -> list[Leftover]:
    """Remove the namespaces of dead owners (and of live ones with include_live); return them."""
    removed = []
    for left in leftovers():
        if left.alive and not include_live:
            continue
        remove(left.netns)
        removed.append(left)
    return removed
