"""The pytest plugin: fixtures, options and markers of the lab (loaded by the root conftest.py).

Fixtures (each makes one change and undoes it):
  lab_topology   the Topology to build (default: SEED); override it in a test module
  lab            the built Lab: namespaces and veth pairs, removed after the test
  xdp_mode       "skb" or "drv": every test that uses it runs once per mode (ids skb, drv)
  l2fwd          the l2fwd forwarder (compiled once per process) attached in xdp_mode to the
                 lab's forwarder interface (default fwd/veth0); in drv mode the peers of the
                 other interfaces of that namespace get bpf/xdp_pass.c so they accept redirects
Markers:
  xdp_modes("skb", ...)        restrict xdp_mode for a test
  l2fwd_at("ns/if")            where l2fwd is attached
  peer_pass(False)             in drv mode, leave the redirect targets' peers without a program
Options:
  --lab-forwarder PATH         the C source of the forwarder under test (default bpf/l2fwd.c)
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import names
from .forwarder import L2FWD, XDP_PASS, Forwarder, L2fwd, Program
from .topology import SEED, Lab, Topology, build
from .xdp import MODES


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xdplab", "XDP forwarder lab")
    group.addoption("--lab-forwarder", metavar="PATH", default=None,
                    help="C source (bcc) of the forwarder under test; default bpf/l2fwd.c")


def pytest_configure(config: pytest.Config) -> None:
    names.run_id()   # set once in the controller, so that xdist workers share it
    for line in ("xdp_modes(*modes): attach modes to run a test in (default: skb and drv)",
                 "l2fwd_at(key): the interface ('ns/if') the l2fwd fixture attaches to (default fwd/veth0)",
                 "peer_pass(enabled): in drv mode, attach xdp_pass to the redirect targets' peers (default True)"):
        config.addinivalue_line("markers", line)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "xdp_mode" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("xdp_modes")
        modes = list(marker.args) if marker else list(MODES)
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            raise pytest.UsageError(f"mark {metafunc.definition.nodeid} with xdp_modes: unknown mode(s) "
                                    f"{unknown}; use {', '.join(MODES)}")
        metafunc.parametrize("xdp_mode", modes, ids=modes)


@pytest.fixture
def lab_topology() -> Topology:
    """The topology the `lab` fixture builds. Override this fixture to build another."""
    return SEED


@pytest.fixture
def lab(lab_topology: Topology) -> Iterator[Lab]:
    """The built lab; everything in it is removed after the test, pass or fail."""
    built = build(lab_topology)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def l2fwd_program(request: pytest.FixtureRequest) -> Program:
    """The forwarder program under test (--lab-forwarder, or bpf/l2fwd.c)."""
    path = request.config.getoption("--lab-forwarder")
    if path is None:
        return L2FWD
    source = Path(path).resolve()
    if not source.is_file():
        raise pytest.UsageError(f"load forwarder {path}: no such file; give the path of a bcc C source")
    return Program(source, L2FWD.function)


@pytest.fixture
def l2fwd(request: pytest.FixtureRequest, lab: Lab, xdp_mode: str, l2fwd_program: Program) -> Iterator[L2fwd]:
    """l2fwd attached in `xdp_mode`; detached and its maps emptied after the test."""
    at = request.node.get_closest_marker("l2fwd_at")
    where = lab.iface(at.args[0] if at else "fwd/veth0")
    peer_mark = request.node.get_closest_marker("peer_pass")
    peers = Forwarder(XDP_PASS)
    fwd = L2fwd(l2fwd_program)
    try:
        if xdp_mode == "drv" and (peer_mark is None or peer_mark.args[0]):
            for i in lab.interfaces.values():
                if i.nsname == where.nsname and i is not where:
                    peers.attach(lab.peer(i.key), "drv")
        fwd.attach(where, xdp_mode)
        yield fwd
    finally:
        try:
            fwd.close()
        finally:
            peers.close()
