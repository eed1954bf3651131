"""Find and remove what a dead lab process left behind, and nothing else.

Every namespace the lab creates is first recorded in /run/xdplab/owners/<name> (under
/run/xdplab/sandbox/<name>/ in a sandbox: netns.sandbox) with its
owner's pid and start time (so a recycled pid is not mistaken for the owner). A SIGKILLed
worker leaves namespaces (and the veths, XDP attachments and sysfs mounts inside them);
the sweep removes the recorded namespaces whose owner is gone. A namespace without a
record is never touched, whatever its name: someone else made it.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from typing import NamedTuple

from .netns import MNT_DETACH, NETNS_RUN_DIR, STATE_BASE, sandbox, state_root, sysfs_dir

PIN_BASE = "/sys/fs/bpf/xdplab"
SANDBOX_PINS = "sandbox-"       # PIN_BASE/sandbox-<name>: a sandbox's pin root (netns.sandbox)


def owners_dir() -> str:
    return f"{state_root()}/owners"


def pin_root() -> str:
    """Maps that objects ask to pin go under pin_root()/<owner>/: p<pid>-<start time> for a
    process (swept when it is gone), up-<lab> for a lab that is up (removed by `lab down`)."""
    return f"{PIN_BASE}/{SANDBOX_PINS}{sandbox()}" if sandbox() else PIN_BASE
_pin_owner: list[str] = []
_libc = ctypes.CDLL(None, use_errno=True)


def starttime(pid: int) -> int | None:
    """A process's start time in clock ticks (None: no such process): with the pid, it names
    one process for good (a pid is recycled, a pid and its start time are not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])     # field 22: start time in clock ticks


def zombie(pid: int) -> bool:
    """Has the process exited, waiting only for its parent to reap it? (A SIGKILLed owner
    stays a zombie until then: it must count as gone.)"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def running(pid: int, start: str) -> bool:
    """Is process `pid`, started at `start` (clock ticks, as recorded), still running? A zombie
    (killed, not yet reaped) is not: the one test for every record's owner."""
    return str(starttime(pid)) == start and not zombie(pid)


def pin_dir() -> str:
    """This process's bpffs directory for pinned maps (created by the loader when needed)."""
    if not _pin_owner:
        pid = os.getpid()
        _pin_owner.append(f"p{pid}-{starttime(pid)}")
    return os.path.join(pin_root(), _pin_owner[0])


def set_pin_owner(owner: str) -> None:
    """Pin under pin_root()/<owner> from now on (`lab up`: "up-<lab>")."""
    _pin_owner[:] = [owner]


@contextlib.contextmanager
def pinning_as(owner: str) -> Iterator[None]:
    """Pin under pin_root()/<owner> inside the block, as this process's own owner after it (a
    `lab up` run in-process, by a test, must not move the rest of the process's pins)."""
    saved = list(_pin_owner)
    set_pin_owner(owner)
    try:
        yield
    finally:
        _pin_owner[:] = saved


def remove_pins(directory: str) -> None:
    """Unpin everything under a pin directory of the lab's and remove it."""
    for dirpath, dirs, files in os.walk(directory, topdown=False):
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(dirpath, f))
        with contextlib.suppress(FileNotFoundError, OSError):
            os.rmdir(dirpath)


def stale_pin_dirs(labs_up: list[str], root: str | None = None) -> list[str]:
    """Pin directories under `root` (this process's pin root) whose owner is gone: a dead
    process's, or a lab's that is not up. A sandbox's pin root is never one: its own
    sessions sweep it."""
    root = root or pin_root()
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if name.startswith("up-"):
            if name[3:] not in labs_up:
                out.append(os.path.join(root, name))
            continue
        pid_s, _, start = name[1:].partition("-")
        if name.startswith("p") and pid_s.isdigit() and not running(int(pid_s), start):
            out.append(os.path.join(root, name))
    return out


def record(nsname: str, owner: str | None = None) -> None:
    """Record the owner of namespace `nsname` (before creating it): this process, or a lab
    left running by `python -m lab up` ("up:<lab>"), which no sweep removes but --force."""
    _write_owner(os.path.join(owners_dir(), nsname), owner)


def _write_owner(path: str, owner: str | None = None) -> None:
    """Write an owner record, "<pid> <start time>" of this process or "<owner> 0", whole or
    not at all: a sweeper never reads half a record."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pid = os.getpid()
    with open(f"{path}.{pid}.tmp", "w") as f:
        f.write(f"{owner} 0\n" if owner else f"{pid} {starttime(pid)}\n")
    os.replace(f"{path}.{pid}.tmp", path)


def forget(nsname: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(owners_dir(), nsname))


class Leftover(NamedTuple):      # (not a dataclass: `lab down` and `clean` would import dataclasses, ~8 ms)
    netns: str
    pid: int
    alive: bool
    owner: str = ""         # "up:<lab>" for a lab left running on purpose


def leftovers() -> list[Leftover]:
    """Every recorded namespace, with whether its owner still runs."""
    out = []
    try:
        names = sorted(os.listdir(owners_dir()))
    except FileNotFoundError:
        return []
    for name in names:
        if name.endswith(".tmp"):
            continue
        try:
            with open(os.path.join(owners_dir(), name)) as f:
                pid_s, start_s = f.read().split()
        except (OSError, ValueError):
            continue        # gone meanwhile, or not a record of ours: never a reason to delete
        if pid_s.startswith("up:"):     # a lab's: kept while it is up or a live process changes it
            from .uplab import owner_alive, read_state
            state = read_state(pid_s[3:])
            kept = state is not None and (state.get("phase", "up") == "up" or owner_alive(state))
            out.append(Leftover(name, 0, kept, pid_s))
            continue
        pid = int(pid_s)
        out.append(Leftover(name, pid, running(pid, start_s)))
    return out


def remove(nsname: str) -> None:
    """Remove a recorded namespace: its sysfs view, its bind mount, its record. Deleting the
    namespace deletes its veths (and their peers) and with them their XDP attachments."""
    for view in sysfs_views(nsname):
        _unmount_dir(view)
    _libc.umount2(os.path.join(NETNS_RUN_DIR, nsname).encode(), MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(NETNS_RUN_DIR, nsname))
    forget(nsname)


def sysfs_views(nsname: str | None = None) -> list[str]:
    """The sysfs views mounted for a namespace (all of them: None), by any process."""
    try:
        names = os.listdir(sysfs_dir())
    except FileNotFoundError:
        return []
    return [os.path.join(sysfs_dir(), n) for n in names if nsname is None or n.rpartition("@")[0] == nsname]


def _unmount_dir(path: str) -> None:
    _libc.umount2(path.encode(), MNT_DETACH)
    with contextlib.suppress(OSError):
        os.rmdir(path)


def stale_sysfs_views() -> list[str]:
    """Sysfs views whose process is gone (a killed `lab why` or `status` leaves one)."""
    out = []
    for view in sysfs_views():
        pid = view.rpartition("@")[2]
        if not pid.isdigit() or starttime(int(pid)) is None or zombie(int(pid)):
            out.append(view)
    return out


def sweep(include_live: bool = False, labs_up: list[str] | None = None) -> list[Leftover]:
    """Remove the namespaces of dead owners (and of live ones with include_live), and the pin
    directories of dead owners; return the namespaces removed."""
    if labs_up is None:
        from .uplab import running
        labs_up = running()
    for directory in stale_pin_dirs(labs_up):
        remove_pins(directory)
    for view in stale_sysfs_views():
        _unmount_dir(view)
    with contextlib.suppress(OSError):
        os.rmdir(pin_root())
    removed = []
    for left in leftovers():
        if left.alive and not include_live:
            continue
        remove(left.netns)
        removed.append(left)
    return removed


SANDBOX_OWNER = "owner"         # state_root()/owner in a sandbox: "<pid> <start time>" of who runs it


def claim_sandbox() -> None:
    """Record this process as the one that runs the current sandbox (netns.sandbox): once it
    is gone, `python -m lab clean` outside any sandbox finishes what the sandbox holds
    (sweep_sandboxes). A sandbox nobody claimed is never swept from outside."""
    _write_owner(f"{state_root()}/{SANDBOX_OWNER}")


def remove_sandbox_folders() -> None:
    """Remove the current sandbox's own folders and owner record, those that are empty then
    (records, labs up, sysfs views, pins: what a sweep left is kept, and said elsewhere)."""
    with contextlib.suppress(OSError):
        os.unlink(f"{state_root()}/{SANDBOX_OWNER}")
    for d in (owners_dir(), f"{state_root()}/up", sysfs_dir(), state_root(), pin_root()):
        with contextlib.suppress(OSError):
            os.rmdir(d)


def _sandbox_alive(name: str) -> bool:
    """Does the process that claimed sandbox `name` still run? (Unclaimed or unreadable: yes.)"""
    try:
        with open(f"{STATE_BASE}/sandbox/{name}/{SANDBOX_OWNER}") as f:
            pid_s, start_s = f.read().split()
    except (OSError, ValueError):
        return True
    return running(int(pid_s), start_s)


def sweep_sandboxes() -> list[Leftover]:
    """Finish the sandboxes whose owner is gone (a test of this project killed with its
    session): their namespaces whose owners are gone, their stale pins and sysfs views, then
    the sandbox's own folders. Live sandboxes, and the current one, are left alone."""
    from .netns import SANDBOX_ENV
    names: set[str] = set()
    with contextlib.suppress(OSError):
        names |= set(os.listdir(f"{STATE_BASE}/sandbox"))
    with contextlib.suppress(OSError):
        names |= {d[len(SANDBOX_PINS):] for d in os.listdir(PIN_BASE) if d.startswith(SANDBOX_PINS)}
    mine, removed = os.environ.get(SANDBOX_ENV), []
    for name in sorted(names - {mine or ""}):
        if _sandbox_alive(name):
            continue
        os.environ[SANDBOX_ENV] = name
        try:
            removed += sweep()
            if not leftovers():     # what is still there belongs to a live owner (a lab up in it)
                remove_sandbox_folders()
        finally:
            if mine is None:
                del os.environ[SANDBOX_ENV]
            else:
                os.environ[SANDBOX_ENV] = mine
    return removed
