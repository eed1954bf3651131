"""The lab's pytest plugin: fixtures, options and markers for any XDP program.

Fixtures (each makes one change and undoes it):
  lab_topology   the Topology to build: override it in your test module or conftest.py
  lab            the built Lab: namespaces and veth pairs; after the test reset, checked and
                 kept for the next test of the same topology (or removed: lab_fresh)
  xdp_mode       "skb" or "drv": every test that uses it runs once per mode (ids skb, drv)
  xdp_program    factory: xdp_program("bpf/prog.bpf.o:func") -> XdpProgram, loaded once per
                 process, detached and its maps emptied after the test
  lab_program    the Program under test: each --lab-program, else the module's
                 @pytest.mark.lab_program("PATH[:FUNCTION]")
  lab_findings   record(**facts): what a scenario saw, for the kernel matrix's table
Markers:
  xdp_modes("skb", ...)        restrict xdp_mode for a test
  lab_program("PATH[:FN]")     the program a test runs when no --lab-program is given
  expect_drops                 the test is about vanishing frames: no preflight check
  lab_fates("paths")           record fates at this level for the test (on, paths, off)
  lab_fresh                    the test changes the lab on purpose: a lab of its own, removed after
Options:
  --lab-fates on|paths|off     what the kernel's frame events record (default on: exceptions,
                               failed redirects, transmits, skb drops; paths: every redirect too)
  --lab-program PATH[:FN]      the program(s) that tests using `lab_program` run against
  --lab-artifacts DIR          where reports are kept (default .lab-artifacts), one folder per test
  --lab-keep failed|all        keep reports of failed tests (default) or of every test
  --lab-reuse on|off           keep labs between tests, reset and checked (default on), or build
                               every test's lab afresh
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import environment, fates, host, inventory, names, pace, preflight, programs, report, settle, sweep, xdp
from .built import FATES, Lab, build
from .dataplane import Port
from .errors import LabError
from .pool import Pool, warn_leak
from .programs import Program, Use, XdpProgram
from .topology import Topology
from .xdp import MODES

if TYPE_CHECKING:
    from .built import Interface
    from .xdp import Attachment

_HOST = pytest.StashKey["host.Snapshot"]()
_POOL = pytest.StashKey[Pool]()
_PHASES = pytest.StashKey[dict[str, float]]()       # a test's time by phase, ms (XDPLAB_PHASES)
PHASES_ENV = "XDPLAB_PHASES"            # a file: one JSON line per test, where its time went
_frames = [0]       # frames sent by finished xdist workers
_settled = [0, 0]   # checks decided when the kernel was quiet, and by the clock, by finished workers
_labs = {"built": 0, "reused": 0, "rebuilt": 0}     # by finished workers
_reset_ms: list[float] = []
_no_reuse: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xdplab", "XDP program lab")
    group.addoption("--lab-program", metavar="PATH[:FUNCTION]", action="append", default=[],
                    help="an XDP program (bcc C source or clang-built ELF object) that tests using the "
                         "lab_program fixture run against; repeat for several")
    group.addoption("--lab-artifacts", metavar="DIR", default=".lab-artifacts",
                    help="directory for failure reports, one folder per test (default .lab-artifacts)")
    group.addoption("--lab-fates", choices=FATES, default="on",
                    help="record the kernel's events about the lab's frames: on (default: exceptions, failed "
                         "redirects, transmits, skb drops), paths (also every successful redirect: slower), off")
    group.addoption("--lab-keep", choices=("failed", "all"), default="failed",
                    help="keep the report of failed tests only (default) or of every test")
    group.addoption("--lab-reuse", choices=("on", "off"), default="on",
                    help="keep each lab after its test, reset and checked to be exactly as built, for the next "
                         "test of the same topology (default on); off: every test builds its own")


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum} (SIGTERM)")


def pytest_configure(config: pytest.Config) -> None:
    names.run_id()   # set once in the controller, so that xdist workers share it
    if os.environ.get("XDPLAB_PACE_FILE") and not hasattr(config, "workerinput"):   # the kernel matrix's column
        Path(os.environ["XDPLAB_PACE_FILE"]).write_text(f"{pace.slowdown()}\n")
    # SIGTERM (what CI systems send to a cancelled job) tears the labs down as Ctrl-C does,
    # unless someone else already handles it
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    for line in ("xdp_modes(*modes): attach modes to run a test in (default: skb and drv)",
                 "lab_program(spec): the program (PATH[:FUNCTION]) a test runs when no --lab-program is given",
                 "expect_drops: the test is about vanishing frames; the preflight check is off",
                 "lab_fates(level): record the kernel's frame events at this level (on, paths, off)",
                 "lab_fresh: the test changes its lab on purpose (topology, sysctls...): it gets a lab of its own, "
                 "removed after it, never one kept from another test",
                 "root: the test needs root and CAP_NET_ADMIN, and is skipped, saying so, without them (every test "
                 "that uses the lab fixture has it)"):
        config.addinivalue_line("markers", line)
    config.stash[_POOL] = Pool()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A root test is skipped, with the reason, where the process is not root."""
    if item.get_closest_marker("root") is not None and environment.lacks_root():
        pytest.skip(environment.NEEDS_ROOT)


def pytest_report_header(config: pytest.Config) -> str | None:
    factor = pace.slowdown()
    if factor > 1:
        return (f"xdplab: this machine is {factor} x slower than the reference: time bounds x {factor}, "
                f"random cases / {factor} (lab.pace.share)")
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of one module that build the same lab in the same mode run one after another
    (a kept lab serves them all). pytest-timeout's per-test bound follows the machine's pace
    (lab/pace.py): a slow guest must not fail a scenario that would pass given the time.
    A test that uses the `lab` fixture (directly or through another fixture) is a root test."""
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.root)
    _group_by_lab(items)
    factor = pace.slowdown()
    if factor <= 1:
        return
    try:
        default = float(config.getini("timeout") or 0)
    except (ValueError, KeyError):
        default = 0.0
    for item in items:
        marker = item.get_closest_marker("timeout")
        seconds = float(marker.args[0]) if marker is not None and marker.args else default
        if seconds > 0:
            item.add_marker(pytest.mark.timeout(seconds * factor), append=False)


def _group_by_lab(items: list[pytest.Item]) -> None:
    """Reorder `items` so that the tests of a module sharing a lab topology and an XDP mode
    (their parameters) are neighbours; each group starts where its first test was, and the
    order inside a group is kept."""
    def group(item: pytest.Item) -> tuple[str, str, str]:
        params = getattr(getattr(item, "callspec", None), "params", {})
        return (str(getattr(item, "fspath", "")), repr(params.get("lab_topology", "")), str(params.get("xdp_mode", "")))
    first: dict[tuple[str, str, str], int] = {}
    for index, item in enumerate(items):
        first.setdefault(group(item), index)
    items[:] = sorted(items, key=lambda item: first[group(item)])


def attach_where_allowed(prog: "programs.XdpProgram", iface: "Interface", mode: str) -> "Attachment":
    """prog.attach(iface, mode); where this kernel's generic XDP refuses the program for the
    maps it uses (5.8 to 5.14: devmaps and cpumaps whose entries can carry a program), the
    test is skipped with the kernel's reason: that mode does not exist there."""
    from .errors import XdpError
    try:
        return prog.attach(iface, mode)
    except XdpError as e:
        if e.reason.startswith(programs.GENERIC_REFUSES):
            pytest.skip(str(e))
        raise


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


def pytest_testnodedown(node: Any, error: object) -> None:     # Any: xdist's WorkerController (untyped)
    """Controller under xdist: add up the frames each worker sent."""
    out = getattr(node, "workeroutput", {})
    _frames[0] += out.get("xdplab_frames", 0)
    _settled[0] += out.get("xdplab_quiet", 0)
    _settled[1] += out.get("xdplab_clock", 0)
    for k in _labs:
        _labs[k] += out.get(f"xdplab_labs_{k}", 0)
    _reset_ms.extend(out.get("xdplab_reset_ms", []))
    if out.get("xdplab_no_reuse"):
        _no_reuse.append(out["xdplab_no_reuse"])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    sent = _frames[0] + Port.total_sent
    if sent:
        mine = f"{names.PREFIX}-{names.run_id()}-"
        left = [x.netns for x in sweep.leftovers() if x.netns.startswith(mine)]
        terminalreporter.write_line(f"xdplab: {sent} frames sent; namespaces left by this run: {len(left)}")
    quiet, clock = _settled[0] + settle.decided["quiet"], _settled[1] + settle.decided["clock"]
    if quiet or clock:
        terminalreporter.write_line(f"xdplab: waits for the kernel to finish with the frames: {quiet} ended when it "
                                    f"was quiet, {clock} at their bound (a kernel busy past it)")
    pool = terminalreporter.config.stash.get(_POOL, None)
    counts = {k: v + (getattr(pool, k) if pool is not None else 0) for k, v in _labs.items()}
    resets = sorted(_reset_ms + (pool.reset_ms if pool is not None else []))
    if counts["built"] or counts["reused"]:
        median = f" (reset and checked in {resets[len(resets) // 2]:.1f} ms, median)" if resets else ""
        terminalreporter.write_line(f"xdplab: labs: {counts['built']} built, {counts['reused']} reused{median}, "
                                    f"{counts['rebuilt']} rebuilt after a test left them changed (LabLeakWarning)")
    problem = (pool.problem if pool is not None else None) or next(iter(_no_reuse), None)
    if problem:
        terminalreporter.write_line(f"xdplab: labs were not reused: {problem}", yellow=True)


@pytest.hookimpl(trylast=True)     # after pytest's own teardown of the last (or interrupted) test's fixtures
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every process: close the BPF objects it loaded (and their pins). Controller: sweep what
    killed workers left; fail the session if it changed the host (the root namespace's links,
    addresses, routes and sysctls, pinned objects, the kernel's taint). Worker: report its
    frame count."""
    config = session.config
    pool = config.stash.get(_POOL, None)
    try:
        if pool is not None:
            pool.close()        # kept labs first: they hold the recorder's and the watch's entries
    except LabError as e:
        config.get_terminal_writer().line(f"xdplab: {e}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    finally:
        inventory.close()
        xdp.unpark_programs()
        programs.close_objects()
        fates.close()
    if not _is_controller(config):
        out: dict[str, Any] = getattr(config, "workeroutput")      # what an xdist worker hands its controller
        out["xdplab_frames"] = Port.total_sent
        out["xdplab_quiet"] = settle.decided["quiet"]
        out["xdplab_clock"] = settle.decided["clock"]
        if pool is not None:
            for k in _labs:
                out[f"xdplab_labs_{k}"] = getattr(pool, k)
            out["xdplab_reset_ms"] = pool.reset_ms
            out["xdplab_no_reuse"] = pool.problem
        return
    if _HOST not in config.stash:
        return
    _report_sweep(config, sweep.sweep())
    changed = host.differences(config.stash[_HOST], host.snapshot())
    if changed:
        config.get_terminal_writer().line(
            "xdplab: the session changed the host (root namespace, bpffs, kernel taint):\n  " +
            "\n  ".join(changed[:50]), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _program_specs(metafunc: pytest.Metafunc) -> list[str]:
    given: list[str] = metafunc.config.getoption("--lab-program")
    if given:
        return given
    marker = metafunc.definition.get_closest_marker("lab_program")
    if marker is None or not marker.args:
        raise pytest.UsageError(f"run {metafunc.definition.nodeid}: it uses lab_program, but no --lab-program "
                                "was given and it has no @pytest.mark.lab_program(\"PATH[:FUNCTION]\")")
    return [str(a) for a in marker.args]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "xdp_mode" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("xdp_modes")
        modes = list(marker.args) if marker else list(MODES)
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            raise pytest.UsageError(f"mark {metafunc.definition.nodeid} with xdp_modes: unknown mode(s) "
                                    f"{unknown}; use {', '.join(MODES)}")
        metafunc.parametrize("xdp_mode", modes, ids=modes)     # direct: the fixture below documents it
    if "lab_program" in metafunc.fixturenames:
        specs = _program_specs(metafunc)
        metafunc.parametrize("lab_program", specs, ids=[Path(s).name for s in specs], indirect=True)


@pytest.fixture
def xdp_mode(request: pytest.FixtureRequest) -> str:
    """The XDP attach mode of this run of the test: "skb" (generic XDP, `ip link` shows
    xdpgeneric) or "drv" (native, `xdp`). A test that asks for it runs once per mode (ids
    [skb] and [drv]); `@pytest.mark.xdp_modes("drv")` picks the modes. Scope: function.
    Depends on: nothing. Example::

        def test_it(lab, xdp_program, xdp_mode):
            xdp_program("prog.bpf.o").attach(lab.iface("dut/veth0"), xdp_mode)
    """
    return str(request.param)


@pytest.fixture
def lab_topology() -> Topology:
    """The topology the `lab` fixture builds.

    Scope: function. Depends on: nothing. Override it in your test module or conftest.py
    (or parametrize it)::

        @pytest.fixture
        def lab_topology():
            return Topology((Veth(End("h1", "veth1", ip="10.0.0.1/24"), End("dut", "veth0")),))
    """
    pytest.fail("build the lab: no topology; define a `lab_topology` fixture in your test module or conftest.py "
                "returning a lab.topology.Topology (see the README)", pytrace=False)


@pytest.fixture
def lab(request: pytest.FixtureRequest, lab_topology: Topology) -> Iterator[Lab]:
    """The built lab: namespaces and veth pairs of `lab_topology`, with a preflight check of
    every attached program's redirect targets before each send (off with expect_drops), and
    the kernel's fates of frames on its devices recorded (`lab.fates()`; --lab-fates, or
    @pytest.mark.lab_fates("paths") to follow every redirect).

    Scope: function. Depends on: lab_topology. After the test, everything it did in the lab
    is undone, pass or fail, in reverse order (programs detached, captures and ports closed,
    processes stopped), and the lab is kept for the next test of the same topology once it is
    checked to be exactly as built (lab.pool; links, addresses, routes, rules, neighbours,
    qdiscs, offloads, queues, sysctls, pins). A test that left it changed is named in a
    LabLeakWarning and the lab is rebuilt. With @pytest.mark.lab_fresh or --lab-reuse off,
    the test gets a lab of its own, removed after it. Example::

        def test_up(lab):
            assert lab.iface("dut/veth0").ifindex > 0
    """
    marker = request.node.get_closest_marker("lab_fates")
    level = marker.args[0] if marker and marker.args else request.config.getoption("--lab-fates")
    pool = request.config.stash[_POOL]
    fresh = request.node.get_closest_marker("lab_fresh") is not None or request.config.getoption("--lab-reuse") == "off"
    began = time.perf_counter()
    xdp.park_programs()         # an attach or detach: ~0.1 ms instead of ~9 (xdp.Parking)
    try:
        built = build(lab_topology, fates=level) if fresh else pool.take(lab_topology, level)
    except LabError as e:
        refused = str(e)        # failed outside the except: a chained exception would print it twice
    else:
        refused = ""
    if refused:
        pytest.fail(refused, pytrace=False)
    pool.built += fresh
    request.node.stash.setdefault(_PHASES, {})["build"] = (time.perf_counter() - began) * 1e3
    if request.node.get_closest_marker("expect_drops") is None:
        built.checks.append(lambda: preflight.check(built))
    try:
        yield built
    finally:
        began = time.perf_counter()
        if fresh:
            built.close()
        else:
            left = pool.give_back(built)
            if left:
                path, line, _ = request.node.location
                warn_leak(request.node.nodeid, built, left, (path, (line or 0) + 1))
        request.node.stash.setdefault(_PHASES, {})["close"] = (time.perf_counter() - began) * 1e3


@pytest.fixture
def lab_program(request: pytest.FixtureRequest) -> Program:
    """The program under test: each --lab-program in turn, else the test's
    @pytest.mark.lab_program("PATH[:FUNCTION]") (relative to the test file, or the working
    directory). Scope: function. Depends on: nothing. Example::

        @pytest.mark.lab_program("prog.bpf.o:xdp_main")
        def test_it(lab, xdp_program, lab_program):
            prog = xdp_program(lab_program)
    """
    try:
        return Program.parse(str(request.param), base=Path(str(request.node.fspath)).parent)
    except LabError as e:
        raise pytest.UsageError(str(e)) from None


@pytest.fixture
def xdp_program(request: pytest.FixtureRequest) -> Iterator[Callable[..., XdpProgram]]:
    """Factory: `xdp_program(spec, function=None)` -> XdpProgram.

    `spec` is a Program or "PATH[:FUNCTION]" (a bcc C source or a clang-built ELF object; a
    relative PATH from the test file's folder, else the working directory: Program.parse);
    FUNCTION may be left out when the object has one XDP program. Objects are loaded once
    per process; programs of one object asked for in one test share its maps. Everything is
    detached, and the maps emptied, after the test. Scope: function. Depends on: nothing.
    Example::

        def test_ring(lab, xdp_program):
            ring0 = xdp_program("bpf/ring.bpf.o:xdp_ring_0")
            ring1 = xdp_program("bpf/ring.bpf.o", "xdp_ring_1")     # shares ring0's maps
            ring0.attach(lab.iface("ring/veth0"), "drv")
    """
    uses: dict[tuple[Path, tuple[str, ...], str], Use] = {}
    made: list[XdpProgram] = []
    here = Path(str(request.node.fspath)).parent

    def make(spec: Program | str, function: str | None = None) -> XdpProgram:
        program = spec if isinstance(spec, Program) else Program.parse(spec, function, base=here)
        if function is not None and isinstance(spec, Program):
            program = program.named(function)
        use = uses.get(program.object_key)
        p = XdpProgram(program, use=use) if use is not None else XdpProgram(program)
        if use is None:
            uses[program.object_key] = p.use
        made.append(p)
        return p

    try:
        yield make
    finally:
        errors: list[LabError] = []
        for p in reversed(made):
            try:
                p.close()
            except LabError as e:
                errors.append(e)
        for u in uses.values():
            try:
                u.close()
            except LabError as e:
                errors.append(e)
        if errors:
            raise errors[0]


@pytest.fixture
def lab_findings(request: pytest.FixtureRequest) -> Callable[..., None]:
    """record(**facts): what a scenario saw, as a JSON line in $XDPLAB_FINDINGS (the kernel
    matrix collects them: which counter moved on which kernel). A no-op otherwise.
    Scope: function. Depends on: nothing. Example: `lab_findings(arrived=0, sent=100)`."""
    import json
    import platform

    def record(**facts: Any) -> None:       # Any: JSON values
        path = os.environ.get("XDPLAB_FINDINGS")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"test": request.node.nodeid, "kernel": platform.release(), **facts}) + "\n")
    return record


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """With $XDPLAB_PHASES set, where each test's time went, one JSON line per test (the
    bench's scenario phases): the lab's build, the rest of the set-up (compiles, attaches),
    sends (preflight included), waits for the kernel to finish, the rest of the test, the
    lab's close, the rest of the teardown."""
    path = os.environ.get(PHASES_ENV)
    if not path:
        yield
        return
    sent, waited = Port.sending_s, settle.waited[0]
    yield
    ms = {k: round(v, 3) for k, v in item.stash.get(_PHASES, {}).items()}
    for when in ("setup", "call", "teardown"):
        ms[when] = round(sum(r.duration for r in getattr(item, "_xdplab_reports", []) if r.when == when) * 1e3, 3)
    ms["send"] = round((Port.sending_s - sent) * 1e3, 3)
    ms["settle"] = round((settle.waited[0] - waited) * 1e3, 3)
    import json
    with open(path, "a") as f:
        f.write(json.dumps({"test": item.nodeid, "ms": ms}) + "\n")


def _said_in_one_line(item: pytest.Item, call: "pytest.CallInfo[None]", rep: pytest.TestReport) -> None:
    """A LabError (a refusal that names the thing and the fix: a bad path, name or value) is
    reported as its line and the test's own line that led to it, not as a traceback through
    the lab (--tb=long shows the traceback)."""
    if (not rep.failed or call.excinfo is None or not call.excinfo.errisinstance(LabError)
            or item.config.getoption("tbstyle", "auto") == "long"):
        return
    entry = next((e for e in reversed(call.excinfo.traceback) if str(e.path) == str(item.path)), None)
    where = f"{item.path}:{entry.lineno + 1}" if entry is not None else item.nodeid
    rep.longrepr = f"{where}: {type(call.excinfo.value).__name__}: {call.excinfo.value}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """On failure (or with --lab-keep=all), collect the lab's report before teardown: add
    it to the pytest report and write it, with pcaps, under --lab-artifacts."""
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get(PHASES_ENV):
        item.__dict__.setdefault("_xdplab_reports", []).append(rep)
    _said_in_one_line(item, call, rep)
    built = getattr(item, "funcargs", {}).get("lab")
    if rep.when != "call" or not isinstance(built, Lab):
        return
    if rep.failed and not built.sends and call.excinfo is not None and call.excinfo.errisinstance(LabError):
        return      # refused before any frame (a path, a name, a value): the lab has nothing to report
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
