"""The l2fwd kit's pytest plugin: the seed's forwarder as fixtures (loaded by conftest.py
next to the core's lab.plugin).

Fixtures:
  l2fwd          the l2fwd forwarder (loaded once per process) attached in xdp_mode to the
                 lab's forwarder interface (default fwd/veth0), the redirect targets' peers set
                 up as l2fwd_peer, its route check added to the preflight
  l2fwd_kind     "bcc" or "elf": every test that uses l2fwd (or dut) runs once per variant
  l2fwd_program  the Program the l2fwd and dut fixtures load
  l2fwd_peer     how the redirect targets' peers are set up: "none", "pass" or "gro";
                 default lab.peers.default_peer(xdp_mode). Parametrize it to change it.
  dut            the forwarder behind one interface, parametrized unit / live-skb / live-drv:
                 dut.route(dst, outif, mac), dut.run(frame) -> Outcome(verdict, output, target)
Markers:
  l2fwd_at("ns/if")            where l2fwd is attached
Options:
  --lab-forwarders KINDS       the l2fwd variants every l2fwd test runs against: bcc, elf or
                               bcc,elf (default)
  --lab-forwarder PATH[:FN]    your own l2fwd-compatible forwarder instead (bcc source or .o)
  --lab-debug                  build it with -DL2FWD_DEBUG: bpf_printk lines in failure reports
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from .. import trace
from ..built import Lab
from ..errors import LabError
from ..peers import default_peer
from ..programs import Program
from .backends import L2fwdLive, L2fwdUnit
from .forwarder import KINDS, L2fwd, l2fwd_variant
from .repro import l2fwd_on
from .seed import INGRESS


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xdplab-l2fwd", "the l2fwd kit (the seed's forwarder)")
    group.addoption("--lab-forwarder", metavar="PATH[:FUNCTION]", default=None,
                    help="your l2fwd-compatible forwarder: a bcc C source or a clang-built ELF object "
                         "(FUNCTION default: its only XDP program)")
    group.addoption("--lab-forwarders", metavar="KINDS", default="bcc,elf",
                    help="l2fwd variants to run every l2fwd test against: bcc, elf or bcc,elf (default)")
    group.addoption("--lab-debug", action="store_true",
                    help="build the forwarder with -DL2FWD_DEBUG; failure reports show its bpf_printk lines")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "l2fwd_at(key): the interface ('ns/if') the l2fwd fixture attaches to "
                                       f"(default {INGRESS})")


def _given(config: pytest.Config) -> Program | None:
    spec = config.getoption("--lab-forwarder")
    if spec is None:
        return None
    try:
        return Program.parse(spec)
    except LabError as e:
        raise pytest.UsageError(str(e)) from None


def _kinds(config: pytest.Config) -> list[str]:
    given = _given(config)
    if given is not None:
        return [given.kind]
    kinds = [k.strip() for k in config.getoption("--lab-forwarders").split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise pytest.UsageError(f"choose forwarder variants {kinds}: unknown {bad}; use bcc, elf or bcc,elf")
    return kinds


@pytest.hookimpl(tryfirst=True)    # before the core's xdp_mode: ids read [bcc-skb], variant first
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "l2fwd_kind" in metafunc.fixturenames:
        kinds = _kinds(metafunc.config)
        metafunc.parametrize("l2fwd_kind", kinds, ids=kinds)   # direct: the fixture below documents it


@pytest.fixture
def l2fwd_kind(request: pytest.FixtureRequest) -> str:
    """Which build of l2fwd this run of the test uses: "bcc" (bpf/l2fwd.c, compiled by bcc)
    or "elf" (bpf/l2fwd.bpf.o, clang and libbpf): a test that asks for it, directly or
    through l2fwd_program, runs once per --lab-forwarders variant (ids [bcc-...], [elf-...]).
    Scope: function. Depends on: nothing. Example: `def test_it(l2fwd_kind): ...`."""
    return str(request.param)


@pytest.fixture
def l2fwd_program(request: pytest.FixtureRequest, l2fwd_kind: str) -> Program:
    """The forwarder program under test: the l2fwd variant `l2fwd_kind` (bcc or elf), or
    --lab-forwarder; --lab-debug builds in its bpf_printk lines.
    Scope: function. Depends on: l2fwd_kind. Example: `L2fwd(l2fwd_program)`."""
    debug = request.config.getoption("--lab-debug")
    given = _given(request.config)
    if given is None:
        return l2fwd_variant(l2fwd_kind, debug)
    program = given if given.function else given.named("xdp_l2fwd")
    return program.with_flags("-DL2FWD_DEBUG") if debug and program.kind == "bcc" else program


@pytest.fixture
def l2fwd_peer(xdp_mode: str) -> str:
    """How the redirect targets' peers are set up: lab.peers.default_peer(xdp_mode) ("pass" in
    drv mode, "none" in skb mode). Scope: function. Depends on: xdp_mode. Example::

        @pytest.mark.parametrize("l2fwd_peer", ["none", "gro"])
        def test_it(lab, l2fwd, l2fwd_peer): ...
    """
    return default_peer(xdp_mode)


@pytest.fixture
def l2fwd(request: pytest.FixtureRequest, lab: Lab, xdp_mode: str, l2fwd_peer: str,
          l2fwd_program: Program) -> Iterator[L2fwd]:
    """l2fwd attached in `xdp_mode` to fwd/veth0 (or @pytest.mark.l2fwd_at("ns/if")); detached
    and its maps emptied after the test. Scope: function. Depends on: lab, xdp_mode,
    l2fwd_peer, l2fwd_program. Example::

        def test_fwd(lab, l2fwd):
            l2fwd.route("192.168.0.1", via=lab.iface("fwd/veth2"), mac="00:00:11:22:33:44")
    """
    at = request.node.get_closest_marker("l2fwd_at")
    with l2fwd_on(lab, xdp_mode, l2fwd_peer, l2fwd_program, at.args[0] if at else INGRESS) as fwd:
        fwd.set_trace_tag(trace.new_tag(request.node.nodeid))
        if request.node.get_closest_marker("expect_drops") is None:
            lab.checks.append(lambda: fwd.preflight(lab, xdp_mode))
        yield fwd


@pytest.fixture(params=["unit", "live-skb", "live-drv"])
def dut(request: pytest.FixtureRequest, l2fwd_program: Program) -> Iterator[L2fwdUnit | L2fwdLive]:
    """The forwarder under test behind one interface, three ways: `unit` (BPF_PROG_TEST_RUN,
    no namespaces) or `live-skb`/`live-drv` (the seed lab, frames from net1). Scenarios
    written against it run unchanged on each: dut.route(...), dut.run(frame) -> Outcome.
    Scope: function. Depends on: l2fwd_program (and builds the seed lab for live-*). Example::

        def test_routed(dut):
            dut.route("192.168.0.1", dut.egress_ifindex, "00:00:11:22:33:44")
            assert dut.run(frame).verdict == "redirect"
    """
    if request.param == "unit":
        with L2fwd(l2fwd_program) as fwd:
            yield L2fwdUnit(fwd)
        return
    mode = request.param.split("-")[1]
    built = request.getfixturevalue("lab")
    with l2fwd_on(built, mode, None, l2fwd_program) as fwd:
        yield L2fwdLive(built, fwd, mode)
