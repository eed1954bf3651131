"""The scenarios catch a broken forwarder: variants of bpf/l2fwd.c with one deliberate bug
each are run through scenarios/test_forwarding.py (with --lab-forwarder) and must fail
there, with the assertion that names the bug; the unmodified source must pass the same way."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.subproc import ROOT, SESSIONS, run

pytestmark = SESSIONS
SOURCE = (ROOT / "bpf" / "l2fwd.c").read_text()

# name -> (line of l2fwd.c to replace, replacement)
BUGS = {
    "forgets-mac-rewrite": ("    __builtin_memcpy(eth->h_dest, f->dst_mac, ETH_ALEN);\n", ""),
    "always-passes": ("    int action = txport_map.redirect_map(f->outif, 0);\n", "    int action = XDP_PASS;\n"),
}


def run_forwarding_scenario(source: Path) -> subprocess.CompletedProcess:
    return run("-m", "pytest", "-q", "--no-header", "-rN", "-x", f"--lab-forwarder={source}",
               "scenarios/test_forwarding.py::test_forwarded_with_mac_rewrite")


def test_the_real_forwarder_passes_through_the_same_path(tmp_path):
    src = tmp_path / "l2fwd.c"
    src.write_text(SOURCE)
    r = run_forwarding_scenario(src)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_a_broken_forwarder_fails_the_forwarding_scenario(tmp_path, bug):
    line, replacement = BUGS[bug]
    assert SOURCE.count(line) == 1, f"bpf/l2fwd.c changed: the line this bug removes is gone: {line!r}"
    src = tmp_path / f"l2fwd-{bug}.c"
    src.write_text(SOURCE.replace(line, replacement))
    r = run_forwarding_scenario(src)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "CompileError" not in out, "the variant must compile: the scenario, not bcc, has to catch it"
    assert "expected 100 matching frame(s), got 0 on net2/veth3" in out, out
    if bug == "forgets-mac-rewrite":
        # the frames did arrive, with the old destination MAC: the report shows them
        assert "RECEIVED: 100 frame(s) not matched" in out, out
        assert "differs in Ether.dst: expected '00:00:11:22:33:44', received '02:00:00:00:01:01'" in out, out
    else:
        assert "RECEIVED: 0 frame(s) not matched" in out, out


def test_the_differential_check_catches_a_forwarder_that_depends_on_where_it_runs(tmp_path):
    """A variant that writes the ingress ifindex into the rewritten MAC behaves differently
    under BPF_PROG_TEST_RUN (ingress: the loopback device) and live (veth0): the differential
    scenario must say so, frame by frame."""
    line = "    __builtin_memcpy(eth->h_dest, f->dst_mac, ETH_ALEN);\n"
    assert SOURCE.count(line) == 1
    src = tmp_path / "l2fwd-ifindex.c"
    src.write_text(SOURCE.replace(line, line + "    eth->h_dest[5] = ctx->ingress_ifindex;\n"))
    r = run("-m", "pytest", "-q", "--no-header", "-x", f"--lab-forwarder={src}",
            "scenarios/test_differential.py")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "CompileError" not in out
    assert "frames differ:" in out and "unit redirect to 3" in out and "live redirect to 3" in out, out
