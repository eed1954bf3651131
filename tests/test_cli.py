"""`python -m lab repro`: every case runs against the real kernel and says what happened."""
from __future__ import annotations

import subprocess

import pytest

from lab import netns
from lab.l2fwd.repro import CASES, run_case
from tests import subproc

ARRIVES = {"native-redirect-no-peer": 0, "native-redirect-pass-peer": 20, "native-redirect-gro-peer": 20,
           "generic-redirect": 20, "missing-txport": 0, "layout-bug": 20}


def lab_cli(*args: str) -> subprocess.CompletedProcess:
    return subproc.run("-m", "lab", *args, env=subproc.child_env(XDPLAB_RUN="c1i0"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_case_runs_and_explains(name):
    assert set(ARRIVES) == set(CASES)
    o, explanation = run_case(CASES[name], frames=20)
    assert len(o.arrived) == ARRIVES[name], explanation
    assert sum(o.verdicts.values()) == 20
    assert f"{ARRIVES[name]} " in explanation and "20" in explanation




def test_native_redirect_no_peer_shows_the_rx_dropped_delta():
    r = lab_cli("repro", "native-redirect-no-peer", "--frames", "50")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "arrived in net2/veth3: 0 of 50" in out
    assert "fwd/veth0        rx_dropped                   +50" in out
    assert "fwd/veth0        rx_queue_0_drops             +50" in out
    assert "verdicts: aborted 0, drop 0, pass 0, tx 0, redirect 50, malformed 0" in out
    assert "INGRESS veth0" in out
    assert [n for n in netns.list_names() if n.startswith("xdplab-c1i0-")] == [], "the repro tears down"


