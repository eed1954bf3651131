"""Unique, short names: run id + xdist worker + sequence, and IFNAMSIZ checks.

Namespaces get globally unique names ("xdplab-<run>-<worker>-<seq>-<name>"), so that two
workers, or two whole runs, never collide. Interfaces keep the names the user gave them
(veth0, ...): each lives in a namespace of its own lab, so names only need to be unique
per namespace, and the user sees the names of their topology everywhere.
"""
from __future__ import annotations

import itertools
import os
import re

from .errors import TopologyError

PREFIX = "xdplab"
IFNAMSIZ = 16          # include/uapi/linux/if.h, with the terminating NUL
_IFNAME_BAD = re.compile(r"[\s/:]")
_NS_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
RUN_ENV = "XDPLAB_RUN"


def check_ifname(name: str, *, where: str = "") -> str:
    """Return `name` if the kernel accepts it as an interface name, else raise."""
    what = f"name interface {name!r}" + (f" in {where}" if where else "")
    if not name:
        raise TopologyError(what, "empty name", "give every interface a name")
    if len(name.encode()) > IFNAMSIZ - 1:
        raise TopologyError(what, f"{len(name.encode())} bytes in UTF-8 ({len(name)} characters), the kernel "
                            f"allows at most {IFNAMSIZ - 1} bytes (IFNAMSIZ)", "use a shorter name")
    if _IFNAME_BAD.search(name) or name in (".", ".."):
        raise TopologyError(what, "contains white space, '/' or ':' (or is '.' or '..')",
                            "use letters, digits, '-', '_' and '.'")
    return name


def check_nsname(name: str) -> str:
    """Return `name` if it is usable as a short namespace name in a topology."""
    if not name or not _NS_NAME.match(name) or len(name) > 32:
        raise TopologyError(f"name namespace {name!r}",
                            "must be 1-32 characters of letters, digits, '-', '_' or '.'",
                            "rename it")
    return name


def run_id() -> str:
    """The id of this test run, shared by the controller and its xdist workers."""
    run = os.environ.get(RUN_ENV)
    if not run:
        run = os.environ[RUN_ENV] = os.urandom(2).hex()      # (secrets would import hashlib: 6 ms a command)
    return run


class NameFactory:
    """Makes the namespace names of one process: unique across workers and runs."""

    def __init__(self, run: str | None = None, worker: str | None = None) -> None:
        self.run = run or run_id()
        self.worker = worker or os.environ.get("PYTEST_XDIST_WORKER", "main")
        self._seq = itertools.count()

    owner: str | None = None      # None: this process owns what it makes (swept when it dies)

    def netns(self, name: str) -> str:
        return f"{PREFIX}-{self.run}-{self.worker}-{next(self._seq)}-{check_nsname(name)}"

    def process_netns(self, what: str) -> str:
        """The one namespace of this process for `what` (not a lab's: no sequence number, so
        never a lab namespace's name)."""
        return f"{PREFIX}-{self.run}-{self.worker}-{what}"


UP_SEPARATOR = "+"      # in no lab or namespace name: "a-x" + "n1" and "a" + "x-n1" never collide


class UpNames(NameFactory):
    """Names of a lab that `python -m lab up` leaves running: "xdplab-up-<lab>+<ns>", owned by
    the lab (not by the short-lived process that built it) until `python -m lab down`."""

    def __init__(self, lab: str) -> None:
        super().__init__(run="up", worker=lab)
        self.lab = check_nsname(lab)
        self.owner = f"up:{self.lab}"

    def netns(self, name: str) -> str:
        return f"{PREFIX}-up-{self.lab}{UP_SEPARATOR}{check_nsname(name)}"


_default: NameFactory | None = None


def default_factory() -> NameFactory:
    global _default
    if _default is None:
        _default = NameFactory()
    return _default
