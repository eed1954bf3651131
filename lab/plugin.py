"""The pytest plugin: fixtures, options and markers of the lab (loaded by the root conftest.py).

Fixtures (each makes one change and undoes it):
  lab_topology   the Topology to build (default: SEED); override it in a test module
  lab            the built Lab: namespaces and veth pairs, removed after the test
  xdp_mode       "skb" or "drv": every test that uses it runs once per mode (ids skb, drv)
  l2fwd_peer     how the peers of the forwarder namespace's other interfaces (the redirect
                 targets' peers) are set up: "none", "pass" (xdp_pass in drv mode) or "gro";
                 default "pass" in drv mode, "none" in skb mode. Parametrize it to change it.
  dut            the forwarder behind one interface, parametrized unit / live-skb / live-drv:
                 dut.route(dst, outif, mac), dut.run(frame) -> Outcome(verdict, output, target)
  l2fwd          the l2fwd forwarder (compiled once per process) attached in xdp_mode to the
                 lab's forwarder interface (default fwd/veth0), with a preflight check before
                 every send: frames that would vanish fail the test at once, with the reason
  l2fwd_kind     "bcc" or "elf": every test that uses l2fwd (or dut) runs once per variant
  l2fwd_program  the Program the l2fwd and dut fixtures load
  lab_findings   record(**facts): what a scenario saw, for the kernel matrix's table
Markers:
  xdp_modes("skb", ...)        restrict xdp_mode for a test
  l2fwd_at("ns/if")            where l2fwd is attached
  expect_drops                 the test is about vanishing frames: no preflight check
Options:
  --lab-forwarders KINDS       the l2fwd variants every l2fwd test runs against: bcc (bpf/l2fwd.c,
                               compiled by bcc), elf (bpf/l2fwd.bpf.o, built by clang, loaded by
                               libbpf); default "bcc,elf"
  --lab-forwarder PATH         your own forwarder instead: a bcc C source, or an ELF object (.o)
  --lab-debug                  build it with -DL2FWD_DEBUG: bpf_printk lines in failure reports
  --lab-artifacts DIR          where reports are kept (default .lab-artifacts), one folder per test
  --lab-keep failed|all        keep reports of failed tests (default) or of every test
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import host, names, report, sweep, trace
from .backends import LiveBackend, UnitBackend
from .dataplane import Port
from .forwarder import L2FWD, L2fwd, Program, l2fwd_variant
from .repro import l2fwd_on
from .topology import SEED, Lab, Topology, build
from .xdp import MODES


_HOST = pytest.StashKey[dict]()
_frames = [0]       # frames sent by finished xdist workers


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xdplab", "XDP forwarder lab")
    group.addoption("--lab-forwarder", metavar="PATH", default=None,
                    help="your forwarder: a bcc C source or a clang-built ELF object (.o) with xdp_l2fwd")
    group.addoption("--lab-forwarders", metavar="KINDS", default="bcc,elf",
                    help="l2fwd variants to run every l2fwd test against: bcc, elf or bcc,elf (default)")
    group.addoption("--lab-debug", action="store_true",
                    help="build the forwarder with -DL2FWD_DEBUG; failure reports show its bpf_printk lines")
    group.addoption("--lab-artifacts", metavar="DIR", default=".lab-artifacts",
                    help="directory for failure reports, one folder per test (default .lab-artifacts)")
    group.addoption("--lab-keep", choices=("failed", "all"), default="failed",
                    help="keep the report of failed tests only (default) or of every test")


def pytest_configure(config: pytest.Config) -> None:
    names.run_id()   # set once in the controller, so that xdist workers share it
    for line in ("xdp_modes(*modes): attach modes to run a test in (default: skb and drv)",
                 "l2fwd_at(key): the interface ('ns/if') the l2fwd fixture attaches to (default fwd/veth0)",
                 "expect_drops: the test is about vanishing frames; the l2fwd preflight check is off"):
        config.addinivalue_line("markers", line)


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)     # before xdist starts workers that create namespaces
def pytest_sessionstart(session: pytest.Session) -> None:
    """Controller: remove what dead lab processes left (SIGKILLed workers), then snapshot
    the root namespace, which the session must leave as it found it."""
    config = session.config
    if not _is_controller(config) or os.geteuid() != 0:
        return
    _report_sweep(config, sweep.sweep())
    config.stash[_HOST] = host.snapshot()


def _report_sweep(config: pytest.Config, removed: list[sweep.Leftover]) -> None:
    if removed:
        config.get_terminal_writer().line(f"xdplab: removed {len(removed)} namespace(s) left by dead lab "
                                          f"processes: {', '.join(r.netns for r in removed)}", yellow=True)


def pytest_testnodedown(node: Any, error: Any) -> None:
    """Controller under xdist: add up the frames each worker sent."""
    _frames[0] += getattr(node, "workeroutput", {}).get("xdplab_frames", 0)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    sent = _frames[0] + Port.total_sent
    if sent:
        mine = f"{names.PREFIX}-{names.run_id()}-"
        left = [x.netns for x in sweep.leftovers() if x.netns.startswith(mine)]
        terminalreporter.write_line(f"xdplab: {sent} frames sent; namespaces left by this run: {len(left)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Controller: sweep what killed workers left; fail the session if the root namespace
    changed (links, addresses, routes, sysctls). Worker: report its frame count."""
    config = session.config
    if not _is_controller(config):
        config.workeroutput["xdplab_frames"] = Port.total_sent
        return
    if _HOST not in config.stash:
        return
    _report_sweep(config, sweep.sweep())
    changed = host.differences(config.stash[_HOST], host.snapshot())
    if changed:
        config.get_terminal_writer().line("xdplab: the session changed the root namespace:\n  " +
                                          "\n  ".join(changed[:50]), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _kinds(config: pytest.Config) -> list[str]:
    path = config.getoption("--lab-forwarder")
    if path is not None:
        return ["elf" if path.endswith(".o") else "bcc"]
    kinds = [k.strip() for k in config.getoption("--lab-forwarders").split(",") if k.strip()]
    bad = [k for k in kinds if k not in ("bcc", "elf")]
    if bad or not kinds:
        raise pytest.UsageError(f"choose forwarder variants {kinds}: unknown {bad}; use bcc, elf or bcc,elf")
    return kinds


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "l2fwd_kind" in metafunc.fixturenames:
        kinds = _kinds(metafunc.config)
        metafunc.parametrize("l2fwd_kind", kinds, ids=kinds)
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
def l2fwd_program(request: pytest.FixtureRequest, l2fwd_kind: str) -> Program:
    """The forwarder program under test: the l2fwd variant `l2fwd_kind` (bcc or elf), or
    --lab-forwarder; --lab-debug builds in its bpf_printk lines."""
    path = request.config.getoption("--lab-forwarder")
    debug = request.config.getoption("--lab-debug")
    if path is None:
        return l2fwd_variant(l2fwd_kind, debug)
    source = Path(path).resolve()
    if not source.is_file():
        raise pytest.UsageError(f"load forwarder {path}: no such file; give a bcc C source or an ELF object")
    program = Program(source, L2FWD.function, kind=l2fwd_kind)
    return program.with_flags("-DL2FWD_DEBUG") if debug and l2fwd_kind == "bcc" else program


@pytest.fixture
def l2fwd_peer(xdp_mode: str) -> str:
    """How the redirect targets' peers are set up: "pass" in drv mode, "none" in skb mode."""
    return "pass" if xdp_mode == "drv" else "none"


@pytest.fixture
def l2fwd(request: pytest.FixtureRequest, lab: Lab, xdp_mode: str, l2fwd_peer: str,
          l2fwd_program: Program) -> Iterator[L2fwd]:
    """l2fwd attached in `xdp_mode`; detached and its maps emptied after the test."""
    at = request.node.get_closest_marker("l2fwd_at")
    with l2fwd_on(lab, xdp_mode, l2fwd_peer, l2fwd_program, at.args[0] if at else "fwd/veth0") as fwd:
        fwd.set_trace_tag(trace.new_tag(request.node.nodeid))
        if request.node.get_closest_marker("expect_drops") is None:
            lab.checks.append(lambda: fwd.preflight(lab, xdp_mode))
        yield fwd


@pytest.fixture
def lab_findings(request: pytest.FixtureRequest) -> Any:
    """record(**facts): what a scenario saw, as a JSON line in $XDPLAB_FINDINGS (the kernel
    matrix collects them: which counter moved on which kernel). A no-op otherwise."""
    import json
    import platform

    def record(**facts: Any) -> None:
        path = os.environ.get("XDPLAB_FINDINGS")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"test": request.node.nodeid, "kernel": platform.release(), **facts}) + "\n")
    return record


@pytest.fixture(params=["unit", "live-skb", "live-drv"])
def dut(request: pytest.FixtureRequest, l2fwd_program: Program) -> Iterator[Any]:
    """The forwarder under test behind one interface, three ways: `unit` (BPF_PROG_TEST_RUN,
    no namespaces) or `live-skb`/`live-drv` (the seed lab, frames from net1). Scenarios
    written against it run unchanged on each: dut.route(...), dut.run(frame) -> Outcome."""
    if request.param == "unit":
        with L2fwd(l2fwd_program) as fwd:
            yield UnitBackend(fwd)
        return
    mode = request.param.split("-")[1]
    built = request.getfixturevalue("lab")
    with l2fwd_on(built, mode, "pass" if mode == "drv" else "none", l2fwd_program) as fwd:
        yield LiveBackend(built, fwd, mode)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """On failure (or with --lab-keep=all), collect the lab's report before teardown: add
    it to the pytest report and write it, with pcaps, under --lab-artifacts."""
    outcome = yield
    rep = outcome.get_result()
    built = getattr(item, "funcargs", {}).get("lab")
    if rep.when != "call" or not isinstance(built, Lab):
        return
    keep_all = item.config.getoption("--lab-keep") == "all"
    if not (rep.failed or keep_all):
        return
    try:
        sections = report.collect(built)
        directory = os.path.join(item.config.getoption("--lab-artifacts"), report.safe_name(item.nodeid))
        report.write(built, sections, directory)
    except Exception as e:  # noqa: BLE001 - a broken report must not hide the test's own failure
        rep.sections.append(("lab report", f"collect the lab report: {e!r}"))
        return
    if rep.failed:
        for name, text in sections.items():
            rep.sections.append((f"lab {name}", text))
    rep.sections.append(("lab artifacts", os.path.abspath(directory)))
