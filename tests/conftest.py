"""Fixtures of the tests of lab/ itself."""
from __future__ import annotations

import fcntl
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


@pytest.fixture
def one_session_at_a_time() -> Iterator[None]:
    """Hold the lock that tests starting whole pytest sessions take (see tests/subproc.py)."""
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    with open(LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that take the session lock may wait for others that hold it (the quick bench
    holds it for minutes): their timeout covers the wait."""
    for item in items:
        if "one_session_at_a_time" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(900))
