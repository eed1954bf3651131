"""Shared fixtures of the scenarios: the seed notes' topology unless a module builds another."""
from __future__ import annotations

import pytest

from lab.l2fwd.seed import SEED
from lab.topology import Topology


@pytest.fixture
def lab_topology() -> Topology:
    """The seed's topology (lab.l2fwd.seed.SEED); a module overrides it to build another."""
    return SEED
