"""Labs kept between the tests of one process: the `lab` fixture's reuse.

A test asks for a lab of a topology (with a fates level); the pool hands it the one an
earlier test of the same process left, reset (`Lab.reset`: everything the test did undone,
the kernel quiet, learnt neighbours flushed, fates started afresh) and checked against the
reading taken when it was built (lab/inventory.py). A lab that differs is closed, and the
differences are returned so that the test which left them is named; the next test gets a
fresh lab. At most `keep` labs wait at a time (the least recently used goes first).

Where the reading cannot be made (no cgroup v2, no CONFIG_CGROUP_BPF), `problem` says why
and every lab is built fresh and closed after its test, as without a pool.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

from .built import Lab, build
from .errors import LabError
from .inventory import InventoryError
from .topology import Topology


class LabLeakWarning(UserWarning):
    """A test left its lab different from how it was built (the lab was rebuilt)."""


@dataclass
class Pool:
    keep: int = 4
    labs: "OrderedDict[tuple[Topology, str], Lab]" = field(default_factory=OrderedDict)
    problem: str | None = None
    """Why labs are not reused in this process (None: they are)."""
    built: int = 0
    reused: int = 0
    rebuilt: int = 0            # labs closed because a test left them changed
    reset_ms: list[float] = field(default_factory=list)    # Lab.checked_ms of each reuse
    closed: bool = False        # after close(), labs given back are closed
    lent: "dict[int, tuple[Lab, tuple[Topology, str] | None]]" = field(default_factory=dict)
    """id -> (a lab taken and not given back yet, its key in `labs` if it can be kept);
    close() closes these too."""

    def take(self, topology: Topology, fates: str) -> Lab:
        """A lab of `topology` as built: a kept one, or a new one (kept for reuse where possible)."""
        key = (topology, fates)
        lab = self.labs.pop(key, None)
        if lab is not None:
            self.reused += 1
            self.lent[id(lab)] = (lab, key)
            return lab
        lab = build(topology, fates=fates)
        self.built += 1
        if self.problem is None:
            try:
                lab.keep()
            except InventoryError as e:
                self.problem = str(e)
            except BaseException:
                lab.close()
                raise
        self.lent[id(lab)] = (lab, key if self.problem is None else None)
        return lab

    def give_back(self, lab: Lab) -> list[str]:
        """The test is done with `lab`: reset it and keep it for the next test of its
        topology; or, where it differs from how it was built, close it and return the
        differences. A lab the pool cannot reuse is closed."""
        _, key = self.lent.pop(id(lab), (lab, None))
        if key is None or self.closed:
            lab.close()
            return []
        try:
            problems = lab.reset()
        except Exception as e:  # noqa: BLE001 - any failure to reset means: do not reuse it
            problems = [f"reset lab {lab.topology.name}: {e}"]
        if problems:
            self.rebuilt += 1
            lab.close()
            return problems
        self.reset_ms.append(lab.checked_ms)
        self.labs[key] = lab
        while len(self.labs) > self.keep:
            self.labs.popitem(last=False)[1].close()
        return []

    def close(self) -> None:
        """Close every lab: those lent and never given back, then the kept ones, the last
        kept first; raises the first failure at the end."""
        self.closed = True
        first: LabError | None = None
        while self.lent or self.labs:
            lab = self.lent.popitem()[1][0] if self.lent else self.labs.popitem()[1]
            try:
                lab.close()
            except LabError as e:
                first = first or e
        if first is not None:
            raise first


def warn_leak(test: str, lab: Lab, problems: list[str], where: tuple[str, int]) -> None:
    """Name the test that left `lab` changed (defined at `where`: file, line), and what it changed."""
    warnings.warn_explicit(LabLeakWarning(
        f"{test} left lab {lab.topology.name!r} changed, so it was rebuilt for the next test:\n    "
        + "\n    ".join(problems) + "\n  Undo the change in the test (lab.on_close(...)), or mark it "
        "@pytest.mark.lab_fresh if it changes the lab on purpose."), LabLeakWarning, where[0], where[1])
