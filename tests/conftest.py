"""Fixtures of the tests of lab/ itself."""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from lab.l2fwd.seed import SEED
from lab.topology import Topology


@pytest.fixture
def lab_topology() -> Topology:
    """The seed's topology, as in scenarios/ (a module overrides it to build another)."""
    return SEED


_sandboxes = itertools.count()
LONGEST = ("test_the_scenarios_pass_alike_with_kept_labs_and_fresh_ones", "test_quick_bench_emits_every_key",
           "test_the_unit_layer_passes_as_nobody")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Two layers: tests/unit/ runs as any user with no kernel object; every other test here
    is a root test (skipped, with the reason, without root: lab.plugin). The longest tests
    (whole scenario suites and the bench, in child sessions) start first: a worker that picks
    one up at the end keeps the others waiting."""
    unit = os.path.join(os.path.dirname(__file__), "unit") + os.sep
    for item in items:
        if not str(item.fspath).startswith(unit):
            item.add_marker(pytest.mark.root)
    items.sort(key=lambda item: item.name not in LONGEST)


@pytest.fixture
def own_sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This test and every process it starts keep the lab's records in a sandbox of their own
    (lab.netns.sandbox): their sweeps see only what they made, so tests that start and kill
    whole sessions run side by side. Afterwards the sandbox must hold nothing (no namespace,
    owner record, lab state, sysfs view or pin was leaked), and is removed. (A session that
    changes the host on purpose runs in a network namespace of its own: tests/test_host.py.)"""
    from lab import netns, sweep, uplab
    name = f"t{os.getpid()}-{next(_sandboxes)}"
    monkeypatch.setenv(netns.SANDBOX_ENV, name)
    sweep.claim_sandbox()       # killed with the run: `python -m lab clean` finishes the sandbox
    try:
        yield name
    finally:
        sweep.sweep()              # what dead children left: the test's own kill points
        left = [f"namespace {x.netns}" for x in sweep.leftovers()] + \
            [f"lab {n}" for n in uplab.running()] + [f"sysfs view {v}" for v in sweep.sysfs_views()] + \
            [f"pin {os.path.join(d, n)}" for d, _, files in os.walk(sweep.pin_root()) for n in files]
        sweep.remove_sandbox_folders()
    assert not left, f"the test left in its sandbox {name}: " + ", ".join(left)
