"""The kernel's fates of the lab's frames: filtered in the kernel to the lab's own devices,
exact, lossy only out loud, explicit about what a kernel does not report, and a failure
that shows what the kernel said."""
from __future__ import annotations

import collections
import json
import subprocess
import sys
import time

import pytest

from lab import fates, report
from lab.built import build
from lab.fates import FatesError, Recorder, assert_fates, fates_before
from lab.l2fwd.repro import l2fwd_on
from lab.l2fwd.seed import ROUTED, SEED, SEED_MAC, seed_frame
from lab.once import OnePerProcess
from tests.subproc import ROOT, child_env
from tests.test_dataplane import PAIR, frame, lab_topology  # noqa: F401 - the pair, its frame and its fixture

#   a: v0 ──── b: v1 (no address: b's stack drops whatever IPv4 arrives, IP_INADDRERRORS)
DROPPED = "kfree_skb IP_INADDRERRORS"


def test_a_fate_the_test_did_not_name_fails_with_what_the_kernel_said(lab):
    before = lab.fates()
    lab.port("a/v0").send(frame(), count=5)
    with pytest.raises(AssertionError) as e:
        assert_fates(before, {}, timeout=0.3)
    text = str(e.value)
    assert text.startswith("the kernel's fates differ from the expectation:\n"
                           f"  b/v1 {DROPPED}: expected 0, got 5\nwhat the kernel reported:\n"), text
    assert "send #1 on a/v0: 5 x 56 bytes, 02:00:00:00:0a:00 > 02:00:00:00:0b:00 IP / UDP" in text
    assert f"5 dropped on b/v1: {DROPPED} in ip_error+0x" in text
    with pytest.raises(AssertionError, match=f"b/v1 {DROPPED}: expected 6, got 5"):
        assert_fates(before, {"b/v1": {DROPPED: 6}}, timeout=0.1)
    d = assert_fates(before, {"b/v1": {DROPPED: 5}})
    assert [f.send.seq for f in d.frames] == [1] * 5


def test_every_dropped_frame_is_matched_to_its_send(lab):
    before = lab.fates()
    port = lab.port("a/v0")
    port.send(frame(ttl=1), count=2)
    port.send(frame(ttl=2), count=3)
    port.send(frame(ttl=1), count=1)          # the same bytes as send 1: attributed to the latest
    d = assert_fates(before, {"b/v1": {DROPPED: 6}})
    assert collections.Counter(f.send.seq for f in d.frames) == {1: 2, 2: 3, 3: 1}
    assert {f.where for f in d.frames} == {"b/v1"} and {f.reason for f in d.frames} == {"IP_INADDRERRORS"}
    assert all(f.location.startswith("ip_error+0x") for f in d.frames)


CHILD = """
import json, sys
from lab.built import build
from lab.once import OnePerProcess
from tests.test_fates import PAIR, frame
with build(PAIR) as lab:
    before = lab.fates()
    print(lab.iface("b/v1").ifindex, flush=True)
    sys.stdin.readline()
    lab.port("a/v0").send(frame(), count=300)
    lab.port("a/v0").send(frame(ttl=7), count=1)
    deadline = __import__("time").monotonic() + 2
    while (lab.fates() - before).ended() < 301 and __import__("time").monotonic() < deadline:
        pass
    print(json.dumps((lab.fates() - before).mapping()), flush=True)
"""


def test_two_sessions_at_once_each_see_only_their_own_fates(lab):
    """Another process (as another pytest session or xdist worker is) builds the same
    topology: its namespaces have the same ifindexes, so only the namespace tells the two
    labs' devices apart. Each sees exactly its own drops."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, env=child_env(), text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert int(child.stdout.readline()) == lab.iface("b/v1").ifindex, child.stderr.read()
        before = lab.fates()
        child.stdin.write("go\n")
        child.stdin.flush()
        lab.port("a/v0").send(frame(), count=100)
        theirs = json.loads(child.stdout.readline())
        assert child.wait(30) == 0
    finally:
        child.kill()
        child.wait()
    assert theirs == {"b/v1": {DROPPED: 301}}
    assert_fates(before, {"b/v1": {DROPPED: 100}})


def test_a_burst_larger_than_the_ring_is_reported_as_lost_and_still_counted(lab):
    """A second recorder with a one-page ring buffer (24 dropped frames' bytes): the
    kernel's counts stay exact, the frames it could not keep are said to be lost."""
    rec = Recorder(ring_bytes=4096)
    try:
        rec.watch(fates.devices(lab.interfaces.values()))
        lab.port("a/v0").send(frame(), count=500)
        deadline = time.monotonic() + 2
        while fates.read(lab, rec).mapping() != {"b/v1": {DROPPED: 500}} and time.monotonic() < deadline:
            time.sleep(0.01)
        f = fates.read(lab, rec)
        assert f.mapping() == {"b/v1": {DROPPED: 500}}, "counted in the kernel, exactly"
        lost = f.lost["skb drops' bytes"]
        assert 0 < len(f.frames) < 500 and len(f.frames) + lost == 500
        assert f"  the bytes of {lost} dropped frames were not kept (the ring buffer was full): the counts above " \
            "are exact, the list of dropped frames is short" in f.table()
    finally:
        rec.close()


def test_what_a_kernel_does_not_report_is_said_not_guessed(monkeypatch, lab):
    """A tracepoint this kernel lacks (as 6.18 lacks 6.1's xdp_redirect_map_err: here one no
    kernel has) and one whose arguments differ from what the program reads are named in every
    table; the rest records."""
    monkeypatch.setitem(fates.EVENTS, 7, ("xdp_lab_no_such", "fate_xdp_lab_no_such"))
    monkeypatch.setitem(fates.ARGS, "xdp_lab_no_such", 7)
    monkeypatch.setitem(fates.ARGS, "xdp_bulk_tx", 9)
    rec = Recorder()
    try:
        assert rec.kernel.missing == {
            "xdp_lab_no_such": "not reported by this kernel: it has no tracepoint xdp_lab_no_such",
            "xdp_bulk_tx": "not reported by this kernel in the form the lab reads (4 arguments, not 9)"}
        rec.watch(fates.devices(lab.interfaces.values()))
        lab.port("a/v0").send(frame(), count=3)
        deadline = time.monotonic() + 2
        while not fates.read(lab, rec).counts and time.monotonic() < deadline:
            time.sleep(0.01)
        table = fates.read(lab, rec).table()
        assert f"b/v1             {DROPPED} in ip_error+0x" in table
        assert "  xdp_bulk_tx: not reported by this kernel in the form the lab reads (4 arguments, not 9)" in table
        assert "  xdp_lab_no_such: not reported by this kernel: it has no tracepoint" in table
    finally:
        rec.close()


def test_without_fates_the_lab_runs_on_counters_and_says_why(monkeypatch):
    def unavailable():
        raise FatesError("read the kernel's BTF", "No such file or directory",
                         "the kernel needs CONFIG_DEBUG_INFO_BTF=y")
    monkeypatch.setattr(fates, "_recorder", OnePerProcess(unavailable, FatesError))
    with build(PAIR) as lab:
        assert lab.fates_problem == ("read the kernel's BTF: No such file or directory; the kernel needs "
                                     "CONFIG_DEBUG_INFO_BTF=y")
        with pytest.raises(FatesError, match=r"^read the fates of lab pair: read the kernel's BTF: No such file"):
            lab.fates()
        with pytest.warns(UserWarning, match="fates not recorded: read the fates of lab pair"):
            before = fates_before(lab)
        assert before is None
        lab.port("a/v0").send(frame(), count=2)
        with pytest.warns(UserWarning, match="fates not checked"):
            assert assert_fates(before, {"b/v1": {DROPPED: 2}}) is None
        assert report.collect(lab)["fates"].startswith("(no fates: read the kernel's BTF")
        assert lab.snapshot().values["b/v1"]["rx_packets"] == 2, "the counters still tell"


@pytest.mark.parametrize("level", ["on", "paths"])
def test_paths_add_every_successful_redirect_and_go_with_the_lab(level):
    with build(SEED, fates=level) as lab, l2fwd_on(lab, "skb", "none") as fwd:
        fwd.route(ROUTED, via=lab.iface("fwd/veth2"), mac=SEED_MAC)
        before = lab.fates()
        lab.port("net1/veth1").send(seed_frame(lab), count=50)
        said = {"net2/veth3": {"kfree_skb NO_SOCKET": 50}}
        if level == "paths":
            said["fwd/veth0"] = {"xdp_redirect -> fwd/veth2": 50}
        d = assert_fates(before, said)
        redirect = next((f for f in d.counts if f.event == "xdp_redirect"), None)
        if level == "paths":
            veth2 = lab.iface("fwd/veth2")
            assert redirect.via == f"txport_map[{veth2.ifindex}]" and redirect.program.startswith("l2fwd")
            assert "xdp_redirect" in fates.recorder()._links
        else:
            assert redirect is None
    assert "xdp_redirect" not in fates.recorder()._links, "no lab follows paths any more: detached"
