"""Any program, loaded or adopted: the bugs found when programs nobody here wrote were put in
the lab, each with the test that failed before its fix."""
from __future__ import annotations

import json
import os

import pytest

from lab import host, report, sweep
from lab.errors import CompileError, LabError, MapError
from lab.peers import XDP_PASS
from lab.programs import PACKAGE_BPF, Program, XdpProgram
from tests import subproc

SMAC = PACKAGE_BPF / "redirect_smac.bpf.o"


def pinned() -> set[str]:
    """What is pinned in /sys/fs/bpf outside the lab's own folder (the bug was pins that left
    it; what stays inside the test's sandbox folder fails the sandbox's own check)."""
    lab_folder = os.path.relpath(sweep.PIN_BASE, host.BPFFS) + "/"
    return {p for p in host.snapshot()["bpffs"] if not p.startswith(lab_folder)}


def test_a_socket_program_is_not_an_xdp_program():
    with pytest.raises(CompileError, match=r"use not_xdp.bpf.o:sock_filter_all as an XDP program: not an XDP "
                                           r"program: section 'socket', type socket_filter; give a SEC\(\"xdp\"\)"):
        XdpProgram(PACKAGE_BPF / "not_xdp.bpf.o", "sock_filter_all")
    with pytest.raises(CompileError, match=r"choose a program in ring.bpf.o: it has 6 XDP programs \(xdp_ring_0, "):
        XdpProgram(str(PACKAGE_BPF / "ring.bpf.o"))
    with pytest.raises(CompileError, match="find program nope in ring.bpf.o: no such function; use one of xdp_ring_0"):
        XdpProgram(f"{PACKAGE_BPF / 'ring.bpf.o'}:nope")
    with pytest.raises(CompileError, match=r"load program /nonexistent.o: /nonexistent.o does not exist"):
        Program.parse("/nonexistent.o")


def test_programs_without_maps_can_be_used_twice_and_objects_copied():
    """Bug 2: a second user of xdp_pass was refused ("they would share its maps"), and
    with_flags, the suggested way out, refuses ELF objects. Now a program without maps can be
    used any number of times, and copy() gives any object a second instance with its own maps."""
    with XdpProgram(XDP_PASS) as a, XdpProgram(XDP_PASS) as b:
        assert a.fd == b.fd
    elf = Program.parse(SMAC, "xdp_redirect_smac")
    with XdpProgram(elf) as one, XdpProgram(elf.copy("two")) as two:
        assert one.map("tx_port").info.id != two.map("tx_port").info.id
        with pytest.raises(LabError, match="use redirect_smac.bpf.o: another user in this process holds it"):
            XdpProgram(elf)


def test_interface_valued_entries_need_an_interface_of_the_programs_namespace(lab):
    with XdpProgram(Program.parse(SMAC, "xdp_redirect_smac")) as p:
        ports = p.map("tx_port")
        with pytest.raises(MapError, match=r"update tx_port with ifindex 3: the map names interfaces, and no program "
                                           r"using it is attached"):
            ports.put(0, 3)
        p.attach(lab.iface("fwd/veth0"), "skb")
        with pytest.raises(MapError, match=r"update tx_port with ifindex 99: no interface of namespace fwd \(where "
                                           r"the program runs\) has that ifindex; give the interface itself"):
            ports.put(0, 99)
        ports.put(0, lab.iface("fwd/veth2"))
        assert ports.entries() == {0: lab.iface("fwd/veth2").ifindex}
        with pytest.raises(MapError, match=r"encode value of redirect_params: 'zz' is not a MAC address"):
            p.map("redirect_params").put("02:00:00:00:00:01", "zz")
        with pytest.raises(MapError, match=r"missing fields \['rx_bytes'\], unknown fields \['bytes'\]"):
            p.map("xdp_stats_map").put(0, {"rx_packets": 1, "bytes": 2})


def test_the_report_covers_a_program_without_verdict_counters(lab):
    """Bug 4: the report said "verdicts: (no forwarder)" while it listed a third-party program's maps."""
    with XdpProgram(Program.parse(SMAC, "xdp_redirect_smac")) as p:
        p.attach(lab.iface("fwd/veth0"), "skb")
        sections = report.collect(lab)
    assert sections["verdicts"] == "redirect_smac.bpf.o:xdp_redirect_smac: keeps no verdict counters; the kernel " \
                                   "counted 0 runs"
    assert sections["programs"].startswith("redirect_smac.bpf.o:xdp_redirect_smac: fwd/veth0 (skb, id ")
    assert "name tx_port" in sections["maps"] and "name xdp_stats_map" in sections["maps"]
    assert "(no forwarder)" not in "".join(sections.values())


@subproc.SESSIONS
def test_pinned_maps_stay_in_the_lab_run_after_run():
    """Bug 1: maps an ELF pins by name went to /sys/fs/bpf and stayed; the next run (or a second
    worker) failed with "couldn't reuse pinned map". A run with two workers, then the next run."""
    before = pinned()
    for workers in ("2", "0"):
        r = subproc.run("-m", "pytest", "-q", "-n", workers, "-p", "no:randomly", "scenarios/test_redirect_smac.py")
        assert r.returncode == 0 and "5 passed" in r.stdout, r.stdout + r.stderr
    assert pinned() == before


@subproc.SESSIONS
def test_a_lab_file_with_any_program_comes_up_dumps_and_goes_down_twice():
    before = pinned()
    name = f"s{os.getpid()}"
    for _ in range(2):
        r = subproc.run("-m", "lab", "up", "topologies/smac.toml", "--name", name)
        assert r.returncode == 0, r.stderr
        try:
            assert "attaching to dut/veth0 in drv mode" in r.stderr and "warning" not in r.stderr, r.stderr
            r = subproc.run("-m", "lab", "dump", "redirect_params", "--lab", name, "--json")
            [m] = json.loads(r.stdout)
            assert m["entries"] == [{"key": "02 00 0a 00 00 01", "value": "02 00 0a 01 00 01",
                                     "key_decoded": "02:00:0a:00:00:01", "value_decoded": "02:00:0a:01:00:01"}]
            r = subproc.run("-m", "lab", "dump", "--lab", name)
            assert "name tx_port" in r.stdout and "name xdp_stats_map" in r.stdout, r.stdout
            r = subproc.run("-m", "lab", "send", "h1/veth1", "--to", "10.1.0.1", "--count", "5", "--lab", name)
            assert r.returncode == 0, r.stderr
            r = subproc.run("-m", "lab", "status", "--lab", name)
            # the kernel keeps 15 characters of a name
            assert "program xdp_redirect_sm (id " in r.stdout and "on dut/veth0 in drv mode" in r.stdout, r.stdout
            assert any("tx_port" in files for _, _, files in os.walk(f"{sweep.pin_root()}/up-{name}")), \
                "tx_port is pinned while up"
        finally:
            r = subproc.run("-m", "lab", "down", "--lab", name)
        assert r.returncode == 0, r.stderr
        assert pinned() == before


def test_generic_xdps_silent_einval_is_explained_where_the_kernel_refuses_map_programs(monkeypatch):
    """5.8-5.14 refuse, in skb mode, a program using a devmap or cpumap whose entries can
    carry a program: EINVAL, no message. Where the probe says so, the lab names the map and
    the fix; elsewhere (and for other errors) the kernel's error is left as it was."""
    import errno as _errno

    from lab import features
    from lab.errors import XdpError

    class Iface:
        key = "fwd/veth0"
    refused = XdpError("attach xdp program", "Invalid argument", errno=_errno.EINVAL)
    with XdpProgram(PACKAGE_BPF / "cpumap.bpf.o", "xdp_cpu") as cpu, \
            XdpProgram(PACKAGE_BPF / "ring.bpf.o", "xdp_tx_back") as plain:
        monkeypatch.setitem(features._symbols, "dev_map_can_have_prog", True)
        e = cpu._why_refused(refused, Iface(), "skb")
        assert str(e) == ("attach xdp program cpumap.bpf.o:xdp_cpu to fwd/veth0 in skb mode: this kernel's generic "
                          "XDP refuses a program using cpus (a cpumap with 8-byte values): entries that can carry a "
                          "program of their own (EINVAL; Linux 5.8 to 5.14); give the map 4-byte values (the "
                          "ifindex, or the queue size, alone), or attach in drv mode")
        assert cpu._why_refused(refused, Iface(), "drv") is refused
        assert plain._why_refused(refused, Iface(), "skb") is refused, "no such map: the kernel's word stands"
        monkeypatch.setitem(features._symbols, "dev_map_can_have_prog", False)
        assert cpu._why_refused(refused, Iface(), "skb") is refused


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "one-by-one"])
def test_emptying_maps_leaves_every_entry_of_every_kind_empty(monkeypatch, batch):
    """Maps are emptied after each test (the object stays loaded for the next): an array and
    a per-CPU array zeroed in one BPF_MAP_UPDATE_BATCH (or one by one where the kernel has
    no batch operations), a hash emptied, a devmap's entries deleted."""
    from lab import bpfsys
    from lab.l2fwd.forwarder import L2FWD
    if not batch:
        monkeypatch.setattr(bpfsys, "update_batch", lambda *a: False)
    p = XdpProgram(L2FWD)
    try:
        m = p.maps
        k = (63).to_bytes(4, "little")
        bpfsys.update(m["qidconf_map"].fd, k, (7).to_bytes(4, "little"))
        bpfsys.update(m["verdict_cnt"].fd, (5).to_bytes(4, "little"),
                      (9).to_bytes(8, "little") * m["verdict_cnt"].ncpus)
        bpfsys.update(m["l2fwd_map"].fd, bytes([192, 168, 0, 1]), bytes(12))
        p.use.clear_maps()
        assert bpfsys.lookup(m["qidconf_map"].fd, k, 4) == bytes(4)
        assert m["verdict_cnt"].sum_percpu((5).to_bytes(4, "little")) == bytes(8)
        assert m["l2fwd_map"].keys() == []
    finally:
        p.close()
        p.use.close()
