"""Fixtures of the tests of lab/ itself."""
from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
from collections.abc import Iterator

import pytest

from lab.l2fwd.seed import SEED
from lab.topology import Topology
from tests.subproc import LOCK


@pytest.fixture
def lab_topology() -> Topology:
    """The seed's topology, as in scenarios/ (a module overrides it to build another)."""
    return SEED


_sandboxes = itertools.count()


@contextlib.contextmanager
def _sandbox(monkeypatch: pytest.MonkeyPatch, lock: int) -> Iterator[str]:
    """This test and every process it starts keep the lab's records in a sandbox of their own
    (lab.netns.sandbox): their sweeps see only what they made, so tests that kill whole
    sessions run side by side. Afterwards the sandbox must hold nothing (no namespace, owner
    record, lab state, sysfs view or pin was leaked), and is removed. `lock`: LOCK_SH for a
    session that leaves the host alone, LOCK_EX for one that changes it on purpose (every
    session compares the host before and after)."""
    from lab import netns, sweep, uplab
    name = f"t{os.getpid()}-{next(_sandboxes)}"
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    with open(LOCK, "w") as f:
        fcntl.flock(f, lock)
        monkeypatch.setenv(netns.SANDBOX_ENV, name)
        try:
            yield name
        finally:
            sweep.sweep()              # what dead children left: the test's own kill points
            left = [f"namespace {x.netns}" for x in sweep.leftovers()] + \
                [f"lab {n}" for n in uplab.running()] + [f"sysfs view {v}" for v in sweep.sysfs_views()] + \
                [f"pin {os.path.join(d, n)}" for d, _, files in os.walk(sweep.pin_root()) for n in files]
            for directory in (sweep.owners_dir(), uplab.state_dir(), netns.sysfs_dir(), netns.state_root(),
                              sweep.pin_root()):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
            fcntl.flock(f, fcntl.LOCK_UN)
    assert not left, f"the test left in its sandbox {name}: " + ", ".join(left)


@pytest.fixture
def one_session_at_a_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """(Its name is older than what it does.) A sandbox for a test that starts whole sessions
    or commands: side by side with others, but never while a test changes the host."""
    with _sandbox(monkeypatch, fcntl.LOCK_SH) as name:
        yield name


@pytest.fixture
def changes_the_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A sandbox, and no other session running: the test changes the root namespace on
    purpose, which every other session's host check would see."""
    with _sandbox(monkeypatch, fcntl.LOCK_EX) as name:
        yield name


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that take the session lock may wait for one that holds it alone: their timeout
    covers the wait."""
    for item in items:
        if {"one_session_at_a_time", "changes_the_host"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.timeout(900))
