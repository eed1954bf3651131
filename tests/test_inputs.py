"""Bad input never reaches Python's own errors: lab files, CLI arguments and the kits'
helpers fail with one line in the lab's form, naming the thing and the fix, and leave
nothing behind. The fuzzers (hypothesis) generate lab files and argument lists; each
either comes up and goes down leaving nothing, or fails with one such line."""
from __future__ import annotations

import os
import string

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lab import host
from lab.errors import MapError
from lab.l2fwd.forwarder import L2fwd
from lab.l2fwd.seed import ROUTED, SEED_MAC
from lab.programs import PACKAGE_BPF
from tests import subproc
from tests.test_lifecycle import leftovers


def test_route_and_raw_values_refuse_wrong_types(lab):
    with L2fwd() as f:
        with pytest.raises(MapError, match=r"^update txport_map: 3 is a int, not an interface; give the interface"):
            f.route(ROUTED, via=3, mac=SEED_MAC)
        with pytest.raises(MapError, match=r"the value is str 'abc', not bytes"):
            f.set_l2fwd_raw(ROUTED, "abc")


# --- fuzzers ------------------------------------------------------------------------------------

def toml(value: object) -> str:
    """The TOML of a generated value (strings, ints, bools, lists, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{ " + ", ".join(f'"{k}" = {toml(v)}' for k, v in value.items()) + " }"


NAMES = st.sampled_from(["a", "b", "fwd", "v0", "v1", "veth0", "x-y", "é", "a" * 20, "", "a/b", "lo"])
ANY = st.one_of(st.integers(-5, 70000), st.text(string.printable + "é", max_size=8), st.booleans(),
                st.lists(st.integers(0, 3), max_size=2))
END = st.fixed_dictionaries({"ns": st.one_of(NAMES, ANY), "name": st.one_of(NAMES, ANY)},
                            optional={"mac": st.sampled_from(["02:00:00:00:00:01", "00:00:00:00:00:00",
                                                              "01:00:00:00:00:01", "zz", 5]),
                                      "ip": st.sampled_from(["10.0.0.1/24", "300.1.1.1/24", "10.0.0.1", 5]),
                                      "mtu": st.one_of(st.sampled_from([68, 1500, 9000, 70000, 0, -1]), ANY),
                                      "rx_queues": st.sampled_from([1, 2, 0, "2"]),
                                      "colour": ANY})
PROGRAM = st.fixed_dictionaries({"program": st.sampled_from([str(PACKAGE_BPF / "xdp_pass.bpf.o"),
                                                             str(PACKAGE_BPF / "xdp_pass.bpf.o") + ":xdp_pass",
                                                             "../bpf/nosuch.c", str(PACKAGE_BPF / "not_xdp.bpf.o"),
                                                             5]),
                                 "attach": st.one_of(st.sampled_from(["a/v0", "b/v1", "c/v9"]), ANY)},
                                optional={"mode": st.sampled_from(["skb", "drv", "fast", 2]),
                                          "peers": st.sampled_from(["none", "pass", "gro", "x"])})


@st.composite
def lab_files(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 3)) == 0:        # a lab that comes up: a pair, maybe xdp_pass attached
        attach = draw(st.sampled_from(["", f'[[program]]\nprogram = "{PACKAGE_BPF / "xdp_pass.bpf.o"}"\n'
                                           f'attach = "b/v1"\nmode = "{draw(st.sampled_from(["skb", "drv"]))}"\n']))
        return subproc.GOOD_VETH + attach
    lines = []
    if draw(st.booleans()):
        lines.append(f"name = {toml(draw(st.one_of(NAMES, ANY)))}")
    if draw(st.booleans()):
        lines.append(f"namespaces = {toml(draw(st.one_of(st.lists(NAMES, max_size=2), ANY)))}")
    if draw(st.integers(0, 9)) == 0:
        lines.append(f"{draw(st.sampled_from(['forwarder', 'debug', 'veth']))} = {toml(draw(ANY))}")
    for _ in range(draw(st.integers(0, 2))):
        a, b = draw(st.one_of(END, st.just({"ns": "a", "name": "v0"}))), \
            draw(st.one_of(END, st.just({"ns": "b", "name": "v1"})))
        lines.append(f"[[veth]]\na = {toml(a)}\nb = {toml(b)}")
    for _ in range(draw(st.integers(0, 1))):
        p = draw(PROGRAM)
        lines.append("[[program]]\n" + "\n".join(f"{k} = {toml(v)}" for k, v in p.items()))
    return "\n".join(lines) + "\n"





@settings(max_examples=subproc.FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                               HealthCheck.too_slow])
@given(text=lab_files())
def test_fuzzed_lab_files_come_up_and_go_down_or_fail_on_one_line(tmp_path, text):
    (tmp_path / "labs").mkdir(exist_ok=True)
    f = tmp_path / "labs" / "fuzz.toml"
    f.write_text(text)
    name = f"fz{os.getpid()}"
    rc, err = subproc.run_cli("up", str(f), "--name", name)
    event("came up" if rc == 0 else "refused")
    if rc == 0:
        rc, err = subproc.run_cli("down", "--lab", name)
        assert rc == 0, err
    else:           # progress lines ("  building ...") may come first; then exactly one error line
        said = [line for line in err.splitlines() if not line.startswith("  ")]
        assert rc == 1 and len(said) == 1 and said[0].startswith("python -m lab up: "), (text, err)
        assert "Traceback" not in err
    assert leftovers(name) == [], text






def test_fuzzing_left_the_root_namespace_as_it_was():
    """The same check the session makes at its end, here after both fuzzers in this worker."""
    before = host.snapshot()
    rc, _ = subproc.run_cli("status", "--lab", "fuzz-no-such-lab")
    assert rc == 1 and host.differences(before, host.snapshot()) == []


