"""`python -m lab bench` runs against the real kernel and emits every key (no
timing is asserted here: speed targets live in the benchmark and the README)."""
from __future__ import annotations

import json

import pytest

from lab.l2fwd.bench import KEYS, SIZES
from tests import subproc

pytestmark = subproc.SESSIONS


@pytest.mark.timeout(660)
def test_quick_bench_emits_every_key(tmp_path):
    """The bench end to end in its smoke form (one repetition, few frames: every key, no figure
    to quote), its suite figures from one scenario file (the whole suite's are the README's,
    from a full run)."""
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    r = subproc.run("-m", "lab", "bench", "--smoke", "--json", str(out), "--plot", str(png),
                    "--suite", "scenarios/test_redirect_smac.py", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    assert set(KEYS) <= set(res), set(KEYS) - set(res)
    for k in KEYS:      # an overhead measured in one run may come out below 0 (noise)
        assert isinstance(res[k], (int, float)) and (res[k] >= 0 or k == "fates_overhead_pct"), (k, res[k])
    assert res["capture_drops"] == int(res["capture_drops"])
    assert res["machine"]["suite"] == ["scenarios/test_redirect_smac.py"]
    assert res["scenario_median_ms"] <= res["scenario_p95_ms"], "percentiles of the same scenarios"
    phases = res["scenario_phases_ms"]
    assert list(phases) == ["build", "set-up", "send", "settle", "call", "close", "teardown"], phases
    assert phases["build"] >= 0 and phases["send"] > 0 and phases["close"] > 0, phases   # a kept lab: build ~0
    assert res["lab_reuse_ms"] > 0 and res["lab_setup_ms"] > 0 and res["lab_fresh_setup_ms"] > 0
    assert "a scenario's median ms by phase: build " in r.stdout
    assert sorted(res["by_size"]) == ["drop", "drv", "skb"]
    assert all(sorted(map(int, v)) == list(SIZES) for v in res["by_size"].values())
    assert res["fwd_mpps_drv"] == res["by_size"]["drv"]["64"] > 0
    assert set(res["targets"]) and all(isinstance(v, bool) for v in res["targets"].values())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for k in KEYS:
        assert k in r.stdout, f"{k} missing from the printed table"
