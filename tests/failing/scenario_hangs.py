"""Scenarios that hang or break on purpose, for tests/test_teardown.py (not collected by
`pytest tests/`). Each writes the names of its namespaces to $XDPLAB_READY once its lab is
up, then hangs (or raises), so that the caller can interrupt or kill it.

      net1                      fwd                          net2
    veth1 ──────────── veth0 [l2fwd]          veth2 ──────────── veth3
"""
import os
import time

import pytest


def announce(lab):
    with open(os.environ["XDPLAB_READY"], "a") as f:
        f.write("".join(f"{ns.name}\n" for ns in lab.namespaces.values()))


def test_hangs(lab, l2fwd):
    announce(lab)
    time.sleep(600)


@pytest.fixture
def broken_fixture(lab, l2fwd):
    announce(lab)
    raise RuntimeError("this fixture breaks on purpose after the lab is up")


@pytest.mark.xdp_modes("drv")
def test_fixture_raises(broken_fixture):
    pass
