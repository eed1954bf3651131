"""Tests of lab/ that need neither root nor the kernel: names, layouts, masks, deltas, validation."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab.counters import Delta
from lab.errors import LabError, MapError, PacketError, TopologyError
from lab.l2fwd.forwarder import FWD, L2fwd
from lab.l2fwd.seed import GO_SEED, SEED
from lab.maps import Layout, hexbytes
from lab.names import NameFactory, check_ifname
from lab.packets import Mask, rewrite, udp_bytes, udp_frame
from lab.topology import End, Topology, Veth, check_ipv4, check_mac, end


# names -----------------------------------------------------------------------------------
def test_ifname_of_15_characters_is_accepted_16_is_refused():
    assert check_ifname("a" * 15) == "a" * 15
    with pytest.raises(TopologyError, match=r"name interface 'aaaaaaaaaaaaaaaa': 16 bytes in UTF-8 \(16 characters\), "
                                            r"the kernel allows at most 15 bytes \(IFNAMSIZ\); use a shorter name"):
        check_ifname("a" * 16)


@pytest.mark.parametrize("bad", ["", "a b", "a/b", "a:b", ".."])
def test_ifname_with_forbidden_characters_is_refused(bad):
    with pytest.raises(TopologyError, match="name interface"):
        check_ifname(bad)


def test_namespace_names_carry_run_worker_and_sequence():
    f = NameFactory(run="ab12", worker="gw3")
    assert [f.netns("fwd"), f.netns("fwd"), f.netns("net1")] == \
        ["xdplab-ab12-gw3-0-fwd", "xdplab-ab12-gw3-1-fwd", "xdplab-ab12-gw3-2-net1"]
    assert NameFactory(run="ab12", worker="gw4").netns("fwd") != NameFactory(run="ab12", worker="gw3").netns("fwd")


# layouts and the seed's map values ----------------------------------------------------------
def test_fwd_layout_is_12_bytes_with_2_of_padding():
    assert (FWD.size, FWD.padding) == (12, 2)
    assert [(f.name, f.offset, f.size) for f in FWD.fields] == [("outif", 0, 4), ("dst_mac", 4, 6)]
    assert FWD.describe() == "struct fwd { u32 outif @0; u8 dst_mac[6] @4; } (12 bytes, 2 padding)"


def test_go_struct_with_int_is_16_bytes():
    assert GO_SEED.size == 16
    assert [(f.name, f.offset) for f in GO_SEED.fields] == [("Outif", 0), ("DstMac", 8)]


def test_seed_value_encodes_as_the_fixed_control_plane_wrote_it():
    raw = FWD.pack(outif=7, dst_mac=bytes.fromhex("000011223344"))
    assert hexbytes(raw) == "07 00 00 00 00 00 11 22  33 44 00 00"      # the seed's second dump
    assert FWD.unpack(raw) == {"outif": 7, "dst_mac": bytes.fromhex("000011223344")}


def test_seed_bug_value_decodes_to_an_all_zero_mac():
    """The seed's first dump: the first 12 bytes of a Go struct {Outif int; DstMac [6]byte}.
    The program reads dst_mac at offset 4, which holds the int's upper half: all zeros;
    the MAC's first two bytes landed in the padding and 33 44 fell off the end."""
    go = GO_SEED.pack(Outif=7, DstMac=bytes.fromhex("000011223344"))
    raw = go[:FWD.size]
    assert hexbytes(raw) == "07 00 00 00 00 00 00 00  00 00 11 22"
    assert FWD.unpack(raw) == {"outif": 7, "dst_mac": bytes(6)}


def test_l2fwd_key_is_the_address_as_it_sits_in_the_ip_header():
    assert L2fwd.key("192.168.0.1") == bytes([0xC0, 0xA8, 0x00, 0x01])
    assert L2fwd.value(7, "00:00:11:22:33:44") == bytes.fromhex("070000000000112233440000")


@pytest.mark.parametrize("bad", ["192.168.0", "192.168.0.256", "::1", "", "x"])
def test_l2fwd_key_refuses_what_is_not_ipv4(bad):
    with pytest.raises(TopologyError, match="encode l2fwd_map key .*not a dotted-quad IPv4 address"):
        L2fwd.key(bad)


def test_layout_pack_refuses_missing_fields_and_values_that_do_not_fit():
    with pytest.raises(MapError, match=r"missing fields \['dst_mac'\]"):
        FWD.pack(outif=1)
    with pytest.raises(MapError, match="does not fit u32"):
        FWD.pack(outif=2 ** 32, dst_mac=bytes(6))
    with pytest.raises(MapError, match="5 items, field holds 6"):
        FWD.pack(outif=1, dst_mac=bytes(5))


# frames ----------------------------------------------------------------------------------
def test_udp_bytes_are_scapys_bytes_for_the_same_arguments():
    """The scapy-free builder the fuzz run uses, held to scapy's bytes (checksums included)
    over random addresses, ports, TTLs, ids, payloads and options."""
    import random
    r = random.Random(7)
    for _ in range(300):
        kw = dict(ip_dst=".".join(str(r.randrange(256)) for _ in range(4)), ip_id=r.randrange(1 << 16),
                  ttl=r.randrange(256), sport=r.randrange(1 << 16), dport=r.randrange(1 << 16),
                  payload=r.randbytes(r.randrange(80)), options=b"\x01" * r.choice([0, 0, 1, 3, 4, 8, 36]))
        assert udp_bytes(**kw) == bytes(udp_frame(**kw)), kw
    assert udp_bytes(payload=b"") == bytes(udp_frame(payload=b""))


# masks -----------------------------------------------------------------------------------
def test_mask_matches_only_where_it_cares():
    exp = udp_frame(ttl=64)
    assert Mask(exp).matches(bytes(exp))
    assert not Mask(exp).matches(bytes(udp_frame(ttl=63)))
    loose = Mask(exp).dont_care("IP.ttl", "IP.chksum")
    assert loose.matches(bytes(udp_frame(ttl=63)))
    assert not loose.matches(bytes(udp_frame(ttl=63, ip_dst="192.168.0.2")))
    assert not loose.matches(bytes(udp_frame(ttl=63))[:-1]), "a shorter frame must not match"


def test_mask_on_mac_and_bitfield():
    exp = udp_frame()
    m = Mask(exp).dont_care("Ether.dst")
    assert m.matches(bytes(rewrite(exp, eth_dst="00:00:11:22:33:44")))
    assert not m.matches(bytes(rewrite(exp, eth_src="00:00:11:22:33:44")))
    raw = bytearray(bytes(exp))
    raw[14] = (raw[14] & 0xF0) | 6      # IHL 6, version kept
    assert not Mask(exp).matches(bytes(raw))
    assert Mask(exp).dont_care("IP.ihl").matches(bytes(raw))
    assert not Mask(exp).dont_care("IP.version").matches(bytes(raw))


def test_mask_errors_name_the_field():
    with pytest.raises(PacketError, match="mask field IPv6.hlim: no such layer"):
        Mask(udp_frame()).dont_care("IPv6.hlim")
    with pytest.raises(PacketError, match="IP has no field 'tll'"):
        Mask(udp_frame()).dont_care("IP.tll")


# counters --------------------------------------------------------------------------------
def test_delta_requires_exact_values_and_nothing_else_moving():
    d = Delta({"fwd/veth0": {"rx_packets": 5, "rx_dropped": 1}, "net2/veth3": {}})
    assert d.mismatches({"fwd/veth0": {"rx_packets": 5, "rx_dropped": 1}}) == []
    assert d.mismatches({"fwd/veth0": {"rx_packets": 5}}) == ["fwd/veth0 rx_dropped: expected +0, got +1"]
    assert d.mismatches({"fwd/veth0": {"rx_packets": 4, "rx_dropped": 1}, "net2/veth3": {"rx_packets": 1}}) == [
        "fwd/veth0 rx_packets: expected +4, got +5", "net2/veth3 rx_packets: expected +1, got +0"]
    assert d.check({"fwd/veth0": {"rx_packets": 5, "rx_dropped": 1}}) is d
    with pytest.raises(AssertionError, match=r"^kernel 6.1: interface counters differ from the expectation:\n"
                                             r"  fwd/veth0 rx_dropped: expected \+0, got \+1\n"
                                             r"all counters that moved:\n"):
        d.check({"fwd/veth0": {"rx_packets": 5}}, "kernel 6.1")


# topology validation ----------------------------------------------------------------------
def test_seed_topology_is_valid_and_has_the_seed_names():
    SEED.validate()
    assert SEED.all_namespaces == ("net1", "fwd", "net2")
    assert SEED.peer("fwd/veth0").key == "net1/veth1"
    assert SEED.end("net2/veth3").mac == "00:00:11:22:33:44"


def test_duplicate_interface_is_refused():
    t = Topology((Veth(End("a", "x"), End("b", "y")), Veth(End("a", "x"), End("c", "z"))))
    with pytest.raises(TopologyError, match="declare interface a/x: declared twice"):
        t.validate()


def test_duplicate_mac_is_refused():
    t = Topology((Veth(End("a", "x", "02:00:00:00:00:01"), End("b", "y", "02:00:00:00:00:01")),))
    with pytest.raises(TopologyError, match="declare MAC address 02:00:00:00:00:01: used by a/x and b/y"):
        t.validate()


@pytest.mark.parametrize("kw, message", [
    ({"mac": "02:00:00:00:00"}, "parse MAC address of a/x '02:00:00:00:00': not six colon-separated hex bytes"),
    ({"mac": "01:00:5e:00:00:01"}, "a multicast address"),
    ({"ip": "10.0.0.1"}, "not an IPv4 address with a prefix length"),
    ({"ip": "10.0.0.300/24"}, "not an IPv4 address with a prefix length"),
    ({"mtu": 10}, "set MTU of a/x: 10 is outside 68..65535"),
])
def test_bad_end_attributes_are_refused(kw, message):
    with pytest.raises(TopologyError, match=message):
        Topology((Veth(End("a", "x", **kw), End("b", "y")),)).validate()


def test_helpers_parse_and_refuse():
    assert end("fwd/veth0").key == "fwd/veth0"
    with pytest.raises(TopologyError, match="not of the form namespace/interface"):
        end("veth0")
    assert check_mac("02:AA:00:00:00:01") == "02:aa:00:00:00:01"
    assert check_ipv4("10.0.0.1") == "10.0.0.1"
    with pytest.raises(TopologyError, match="fix|write it as"):
        check_ipv4("10.0.0")


def test_errors_read_verb_object_reason_fix():
    e = LabError("attach xdp to fwd/veth0 in drv mode", "veth: Peer MTU is too large to set XDP",
                 "lower the peer's MTU", errno=34)
    assert str(e) == ("attach xdp to fwd/veth0 in drv mode: veth: Peer MTU is too large to set XDP (ERANGE); "
                      "lower the peer's MTU")


def test_seed_value_decodes_for_people():
    raw = bytes.fromhex("070000000000112233440000")
    assert FWD.format(raw) == "outif 7, dst_mac 00:00:11:22:33:44, padding 2 bytes"


def test_layout_check_names_the_fields_whose_offsets_differ():
    assert FWD.differences(FWD) == []
    assert FWD.differences(GO_SEED) == ["size 16, the map's 12",
                                       "field Outif at offset 0 (8 bytes), the map's outif at offset 0 (4 bytes)",
                                       "field DstMac at offset 8 (6 bytes), the map's dst_mac at offset 4 (6 bytes)"]
    swapped = Layout.c("swapped", [("dst_mac", "u8[6]"), ("pad", "u16"), ("outif", "u32")])
    with pytest.raises(MapError, match=r"check layout of l2fwd_map value: swapped .* differs from the map's struct "
                                       r"fwd .*: field dst_mac at offset 0 \(6 bytes\), the map's outif at offset 0 "
                                       r"\(4 bytes\); field pad at offset 6 \(2 bytes\), the map's dst_mac at offset "
                                       r"4 \(6 bytes\); field outif @8 has no counterpart"):
        FWD.check(swapped, "l2fwd_map value")


# pace: time bounds follow the machine's speed ---------------------------------------------
def test_time_bounds_follow_the_measured_slowdown(monkeypatch):
    from lab import pace, plugin
    monkeypatch.setattr(pace, "_measured", None)
    monkeypatch.setenv("XDPLAB_SLOWDOWN", "4")
    assert pace.slowdown() == 4.0 and pace.scaled(2.0) == 8.0

    class Item:                       # what pytest_collection_modifyitems touches of an item
        def __init__(self, timeout=None):
            self.markers = [pytest.mark.timeout(timeout).mark] if timeout else []

        def get_closest_marker(self, name):
            return next((m for m in self.markers if m.name == name), None)

        def add_marker(self, marker, append=True):
            self.markers.insert(len(self.markers) if append else 0, marker.mark)

    class Config:
        def getini(self, name):
            assert name == "timeout"
            return "120"

    plain, marked = Item(), Item(900)
    plugin.pytest_collection_modifyitems(Config(), [plain, marked])
    assert plain.get_closest_marker("timeout").args == (480.0,)
    assert marked.get_closest_marker("timeout").args == (3600.0,)

    monkeypatch.setattr(pace, "_measured", None)
    monkeypatch.setenv("XDPLAB_SLOWDOWN", "1.5")
    assert pace.slowdown() == 1.5
    monkeypatch.setattr(pace, "_measured", None)
    monkeypatch.delenv("XDPLAB_SLOWDOWN")
    assert pace.slowdown() == 1.0, "this machine is the reference kind: bounds stay as written"
    assert pace.share(300, floor=60) == 300
    monkeypatch.setattr(pace, "_measured", 16.3)      # the 6.1 guest under software emulation
    assert (pace.share(300, floor=60), pace.share(60, floor=10), pace.share(1000, floor=10)) == (60, 10, 61)
    monkeypatch.setattr(pace, "_measured", 4.0)
    assert (pace.share(300, floor=60), pace.share(60, floor=10)) == (75, 15)


def test_the_kernel_matrix_finds_an_unpacked_kernel_and_shows_wall_time_and_slowdown(tmp_path, monkeypatch):
    from lab import kernels
    monkeypatch.setattr(kernels, "UNPACKED", str(tmp_path))
    version = "5.10.0-99-amd64"
    image = tmp_path / version / "boot" / f"vmlinuz-{version}"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"")
    with pytest.raises(LabError, match=rf"use kernel {version}: its headers are not in .*/lib/modules/{version}/build "
                                       r".*; fetch them: scripts/bootstrap-kernels.sh 5.10"):
        kernels.find_kernel("5.10")
    (tmp_path / version / "lib" / "modules" / version / "build" / "include").mkdir(parents=True)
    assert kernels.find_kernel("5.10") == (version, str(image))
    with pytest.raises(LabError, match=r"find kernel 4.19: no /boot/vmlinuz-4.19 nor .*; fetch it"):
        kernels.find_kernel("4.19")
    text = kernels.table([{"kernel": version, "seconds": 812.5, "slowdown": 9.5, "tests": {"t.py::a": "passed"},
                           "findings": {}},
                          {"kernel": "6.18", "seconds": 30.0, "tests": {"t.py::a": "failed"}, "findings": {}}])
    lines = text.splitlines()
    assert lines[1].split() == ["(wall", "time,", "slowdown)", "812.5", "s,", "x9.5", "30.0", "s,", "x?"]
    assert lines[3].split() == ["t.py::a", "passed", "failed"]


def test_the_kernel_matrix_names_the_probe_behind_each_skip(tmp_path):
    from lab import kernels
    reason = "this kernel has no multi-buffer XDP: no BPF helper xdp_get_buff_len in its BTF (Linux 5.18+)"
    (tmp_path / "junit.xml").write_text(
        '<testsuites><testsuite>'
        '<testcase classname="scenarios.test_frags" name="test_a[skb]"/>'
        f'<testcase classname="scenarios.test_frags" name="test_b[drv]"><skipped message="Skipped: {reason}"/>'
        '</testcase>'
        f'<testcase classname="scenarios.test_frags" name="test_b[skb]"><skipped message="Skipped: {reason}"/>'
        '</testcase>'
        '<testcase classname="scenarios.test_vlan" name="test_c"><failure message="boom"/></testcase>'
        '</testsuite></testsuites>')
    res = kernels._results("5.10.0-46-amd64", tmp_path, 1570.0, boot_rc=0)
    assert res["tests"] == {"test_frags::test_a[skb]": "passed", "test_frags::test_b[drv]": "skipped",
                            "test_frags::test_b[skb]": "skipped", "test_vlan::test_c": "failed"}
    assert kernels.table([res]).splitlines()[-3:] == [
        "5.10.0-46-amd64: 1 passed, 1 failed, 2 skipped in 1570.0 s",
        f"  skipped 2: {reason}",
        "    test_frags::test_b[drv], test_frags::test_b[skb]"]


def test_a_vm_that_hangs_is_killed_and_the_matrix_says_where_it_was(tmp_path, monkeypatch):
    """CI once waited an hour on a 6.1 guest and printed a traceback. A VM (here a stand-in
    that prints its boot) whose pytest never starts is killed, whole process group, and booted
    once more; one whose pytest hangs is killed at its budget; the result names where each got to."""
    from lab import kernels
    out, boots, pidfile = tmp_path / "out", tmp_path / "boots", tmp_path / "pid"
    monkeypatch.setattr(kernels, "GRACE_S", 0.5)
    monkeypatch.setattr(kernels, "BOOT_S", 1.5)
    hung_boot = (f"echo boot >> {boots}; sleep 60 & echo $! > {pidfile}; echo 'Linux version 6.1.0'; "
                 "echo 'init: ok'; wait")
    monkeypatch.setattr(kernels, "vm_command", lambda *a: ["sh", "-c", hung_boot])
    t = time.monotonic()
    res = kernels.run_vm("6.1.0-56-amd64", "/boot/vmlinuz", [], out, kvm=False, budget=30)
    assert 3 < time.monotonic() - t < 10 and boots.read_text() == "boot\nboot\n"
    assert res["error"] == (f"pytest had not started after 2 s, in two boots; pytest never started; the console's "
                            f"last lines ({out / 'vng.log'}): Linux version 6.1.0 / init: ok")
    assert (out / "vng.boot1.log").read_text() == "Linux version 6.1.0\ninit: ok\n"
    child = Path(f"/proc/{pidfile.read_text().strip()}/stat")
    for _ in range(50):                      # killed at once; init reaps it a moment later
        if not child.exists() or child.read_text().split(") ")[1].startswith("Z"):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the VM's whole process group is killed: its child still runs")
    assert "6.1.0-56-amd64: no test ran in " in kernels.table([res])

    hung_test = (f"echo boot >> {boots}; printf 'scenarios/test_drops.py::test_a[skb] PASSED\\n"
                 f"scenarios/test_drops.py::test_b[drv] ' > {out}/pytest.txt; sleep 60")
    monkeypatch.setattr(kernels, "vm_command", lambda *a: ["sh", "-c", hung_test])
    boots.unlink()
    res = kernels.run_vm("6.1.0-56-amd64", "/boot/vmlinuz", [], out, kvm=False, budget=2)
    assert boots.read_text() == "boot\n", "a VM that started pytest is not booted again"
    assert res["error"] == (f"the VM gave no result in 2 s and was killed; pytest's last lines ({out / 'pytest.txt'}): "
                            "scenarios/test_drops.py::test_a[skb] PASSED / scenarios/test_drops.py::test_b[drv]")
    assert not (out / "vng.boot1.log").exists(), "the last run's files are cleared"


def test_fates_are_compared_in_what_this_kernel_can_say():
    from lab.fates import NO_REASON, REASON, Fate, Fates
    dropped = Fate(where="net2/veth3", event="kfree_skb", what=NO_REASON, to="", program="", via="", location="",
                   ends=True)
    old = Fates(counts={dropped: 30}, missing={"xdp_redirect_err": "not reported by this kernel: ...",
                                                REASON: "not reported by this kernel: ..."})
    expected = {"fwd/veth0": {"xdp_redirect_err EOPNOTSUPP -> fwd/veth2": 30},
                "net2/veth3": {"kfree_skb OTHERHOST": 20, "kfree_skb NO_SOCKET": 10}}
    assert old.as_this_kernel_says(expected) == {"net2/veth3": {f"kfree_skb {NO_REASON}": 30}}
    assert old.mismatches(expected) == []
    assert old.mismatches({"net2/veth3": {"kfree_skb OTHERHOST": 29}}) != [], "counts still exact"
    new = Fates(counts={dropped: 30})
    assert new.as_this_kernel_says(expected) == {k: dict(v) for k, v in expected.items()}
    assert new.mismatches(expected) != []


def test_a_new_kernel_taint_is_a_change_of_the_host():
    from lab import host
    """A scenario that provokes a kernel WARNING (test_queues.py once did: generic XDP on an
    rx queue the device lacks) taints the kernel: the session's host check names it."""
    base = {"links": {}, "sysctls": {}, "bpffs": {}, "addresses": [], "routes": []}
    assert host.differences({**base, "tainted": 0}, {**base, "tainted": 512}) == \
        ["kernel taint: none -> W (W: a kernel WARNING: see dmesg)"]
    assert host.differences({**base, "tainted": 512}, {**base, "tainted": 512 | 128}) == \
        ["kernel taint: W -> DW (D: a kernel oops: see dmesg)"]
    assert host.differences({**base, "tainted": 512 | 4096}, {**base, "tainted": 512}) == [], \
        "only new flags count: a flag the kernel had before is not this session's doing"


def test_the_xdp_tx_check_reads_the_returned_verdict_only():
    """bpfsys.returns_constant: `r0 = 3` counts only where straight-line code (and `ja`)
    takes it to `exit` inside the main function."""
    from lab.bpfsys import returns_constant

    def ins(code: int, dst: int = 0, off: int = 0, imm: int = 0) -> bytes:
        return bytes([code, dst]) + off.to_bytes(2, "little", signed=True) + imm.to_bytes(4, "little", signed=True)
    mov_r0_3, mov_r0_2, exit_ = ins(0xB7, 0, imm=3), ins(0xB7, 0, imm=2), ins(0x95)
    assert returns_constant(mov_r0_3 + exit_, 3) == 0
    assert returns_constant(ins(0xB4, 0, imm=3) + ins(0xB7, 1, imm=7) + exit_, 3) == 0, "32-bit mov; r1 untouched r0"
    assert returns_constant(mov_r0_3 + ins(0x05, off=1) + mov_r0_2 + exit_, 3) == 0, "ja over another verdict"
    assert returns_constant(mov_r0_3 + mov_r0_2 + exit_, 3) is None, "r0 written again before exit"
    assert returns_constant(mov_r0_3 + ins(0x85, imm=1) + exit_, 3) is None, "a call clobbers r0"
    assert returns_constant(mov_r0_3 + ins(0x25, 1, off=1, imm=100) + mov_r0_2 + exit_, 3) is None, "a branch"
    assert returns_constant(ins(0xB7, 1, imm=3) + exit_, 3) is None, "3 in r1 is not the verdict"
    assert returns_constant(mov_r0_2 + exit_ + mov_r0_3 + exit_, 3, end=2) is None, "a subprogram's return 3"
    assert returns_constant(mov_r0_2 + exit_ + mov_r0_3 + exit_, 3) == 2


def test_the_kernel_matrix_checks_every_kernel_and_vng_before_it_starts(tmp_path, monkeypatch):
    from lab import kernels
    ran = []
    monkeypatch.setattr(kernels, "run_host", lambda *a: ran.append("host"))
    monkeypatch.setattr(kernels, "ROOT", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(kernels, "find_kernel", lambda s: (f"{s}.0-1-amd64", "/boot/x") if s != "4.19" else
                        (_ for _ in ()).throw(LabError("find kernel 4.19", "no /boot/vmlinuz-4.19", "fetch it")))
    with pytest.raises(LabError, match="find kernel 4.19"):
        kernels.main(["6.1", "4.19"], [], host=True, kvm="off")
    with pytest.raises(LabError, match=r"boot a kernel VM: virtme-ng \(vng\) is not installed; install it: "
                                       r"scripts/bootstrap-kernels.sh 6.1 \(make kernels does\)"):
        kernels.main(["6.1"], [], host=True, kvm="off")
    assert ran == [], "nothing ran: the host's hour of scenarios is not spent before a missing kernel shows"


def test_queue_counts_that_disagree_are_refused():
    with pytest.raises(TopologyError, match=r"^set queues of fwd/veth0: queues=2 and rx_queues=4, tx_queues=1 "
                                            r"disagree; give queues=N alone, or rx_queues and tx_queues$"):
        End("fwd", "veth0", queues=2, rx_queues=4)
    assert (End("fwd", "veth0", queues=4).rx_queues, End("fwd", "veth0", queues=4).tx_queues) == (4, 4)
    assert End("fwd", "veth0", queues=3, rx_queues=3, tx_queues=3).rx_queues == 3


def test_lab_close_runs_steps_in_reverse_and_together_steps_at_once():
    """Lab.close: last registered first; consecutive `together` steps run at the same time
    (each waits on a barrier that only opens when all of them are inside), a plain step
    between them splits the group, and failures are collected and raised at the end."""
    import threading

    from lab.built import Lab
    lab = Lab(topology=Topology(veths=()))
    order: list[str] = []
    both = threading.Barrier(2, timeout=5)

    def together(name: str) -> None:
        both.wait()             # raises BrokenBarrierError after 5 s if run one after another
        order.append(name)

    def fail() -> None:
        order.append("fail")
        raise OSError("stuck")
    lab.on_close("first", lambda: order.append("first"))
    lab.on_close("capture a", lambda: together("a"), together=True)
    lab.on_close("capture b", lambda: together("b"), together=True)
    lab.on_close("split", fail)
    lab.on_close("port c", lambda: order.append("c"), together=True)
    with pytest.raises(LabError, match=r"tear down lab lab: split: stuck"):
        lab.close()
    assert order[:2] == ["c", "fail"] and sorted(order[2:4]) == ["a", "b"] and order[4:] == ["first"], order


def test_a_bound_asks_the_machines_pace_only_once_its_written_time_has_passed(monkeypatch):
    """pace.Bound: a wait that ends in time never measures the machine (a command saves the
    measure); past the written time the bound stretches by the pace (XDPLAB_SLOWDOWN=3 here)."""
    from lab import pace
    monkeypatch.setattr(pace, "_measured", None)
    monkeypatch.setenv("XDPLAB_SLOWDOWN", "3")
    b = pace.Bound(10)
    assert 9 < b.left() <= 10 and not b.expired()
    assert pace._measured is None
    b = pace.Bound(0.01)
    time.sleep(0.02)
    assert not b.expired() and pace._measured == 3.0     # 0.03 s on this machine
    time.sleep(0.02)
    assert b.expired() and b.left() == 0


def test_a_cpus_backlog_is_read_from_softnet_stat(tmp_path, monkeypatch):
    """lab.settle waits while a CPU's backlog holds frames: column 12 of softnet_stat (its
    CPU in column 13, 6.18's layout); a kernel without those columns is not read."""
    from lab import settle
    stat = tmp_path / "softnet_stat"
    monkeypatch.setattr(settle, "SOFTNET", str(stat))
    stat.write_text("0000a1 0 0 0 0 0 0 0 0 0 0 00000000 00000000 0 0\n"
                    "0000b2 0 0 0 0 0 0 0 0 0 0 00000011 00000001 11 0\n")
    assert settle._backlogs() == ["CPU 1's backlog holds 17 frame(s)"]
    stat.write_text("0000a1 0 0 0 0 0 0 0 0 0 0\n")          # before 5.10: 11 columns
    assert settle._backlogs() == []


def test_bytes_that_are_not_btf_are_refused_with_the_fix():
    from lab.btf import Btf
    from lab.errors import BtfError
    with pytest.raises(BtfError, match=r"read BTF: 3 bytes: shorter than a BTF header \(24\); give the .BTF section"):
        Btf(b"abc")
    with pytest.raises(BtfError, match=r"read BTF: magic 0x0, not 0xeb9f; give the .BTF section"):
        Btf(bytes(24))
