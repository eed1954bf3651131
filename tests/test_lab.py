"""Root tests of lab/ against the real kernel: build and teardown, attach, maps, errors."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from lab import bccload, netns, xdp
from lab.built import build
from lab.counters import sysfs_stats
from lab.errors import MapError, NetnsError, TopologyError, XdpError
from lab.l2fwd import forwarder as fw
from lab.l2fwd.forwarder import L2fwd
from lab.l2fwd.seed import GO_SEED, SEED
from lab.names import NameFactory
from lab.peers import XDP_PASS
from lab.programs import Program, Use, XdpProgram
from lab.topology import End


def ip_json(*args: str) -> list:
    return json.loads(subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True).stdout)


def lab_leftovers(run: str) -> dict:
    """What of a run is still on the machine: namespaces and sysfs mounts."""
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f if f"xdplab-{run}-" in line]
    return {"netns": [n for n in netns.list_names() if n.startswith(f"xdplab-{run}-")], "mounts": mounts}


def test_build_makes_the_seed_topology_and_close_removes_it():
    names = NameFactory(run="t0a1")
    root_links = {link["ifname"] for link in ip_json("link")}
    lab = build(SEED, names)
    try:
        assert sorted(lab.namespaces) == ["fwd", "net1", "net2"]
        for key, i in lab.interfaces.items():
            [link] = ip_json("-n", i.ns.name, "-d", "link", "show", i.name)
            assert (link["address"], link["mtu"], link["operstate"], link["linkinfo"]["info_kind"]) == \
                (SEED.end(key).resolved_mac(), 1500, "UP", "veth"), key
            assert link["link_netnsid"] is not None, f"{key}: its peer must be in another namespace"
            addrs = [a["local"] for a in ip_json("-n", i.ns.name, "addr", "show", i.name)[0]["addr_info"]]
            assert addrs == [SEED.end(key).ip.split("/")[0]], f"{key}: only its IPv4 address (IPv6 is off)"
            assert sysfs_stats(i)["tx_packets"] == 0, f"{key}: a quiet link sends nothing by itself"
        assert {link["ifname"] for link in ip_json("link")} == root_links, "nothing is added to the root namespace"
    finally:
        lab.close()
    assert lab_leftovers("t0a1") == {"netns": [], "mounts": []}
    lab.close()   # idempotent


def test_failed_build_removes_what_it_made_and_leaves_foreign_objects_alone():
    names = NameFactory(run="t0a2", worker="w")
    foreign = netns.Netns.create("xdplab-t0a2-w-2-net2")   # the name build() will want third
    try:
        with pytest.raises(NetnsError, match=r"create network namespace xdplab-t0a2-w-2-net2: "
                                             r"/run/netns/xdplab-t0a2-w-2-net2 already exists \(EEXIST\); remove it"):
            build(SEED, names)
        assert lab_leftovers("t0a2")["netns"] == ["xdplab-t0a2-w-2-net2"], "only the foreign namespace remains"
    finally:
        foreign.close()
    assert lab_leftovers("t0a2") == {"netns": [], "mounts": []}


@pytest.mark.parametrize("mode", ["skb", "drv"])
def test_attach_is_read_back_and_detach_removes_it(lab, mode):
    veth0 = lab.iface("fwd/veth0")
    with XdpProgram(XDP_PASS) as f:
        a = f.attach(veth0, mode)
        state = xdp.query(veth0)
        assert (state.mode, state.prog_id) == (mode, a.prog_id)
        [link] = ip_json("-n", veth0.ns.name, "-d", "link", "show", "veth0")
        assert link["xdp"]["mode"] == {"skb": 2, "drv": 1}[mode]     # XDP_ATTACHED_SKB / _DRV
        assert link["xdp"]["prog"]["id"] == a.prog_id
        with pytest.raises(XdpError, match="attach xdp program xdp_pass to fwd/veth0"):
            f.attach(veth0, mode)                                     # one program per mode
    assert xdp.query(veth0).mode is None


def test_unknown_mode_is_refused(lab):
    with XdpProgram(XDP_PASS) as f, pytest.raises(XdpError, match="choose xdp attach mode 'hw': unknown mode; "
                                                                 "use one of skb, drv"):
        f.attach(lab.iface("fwd/veth0"), "hw")




def test_value_of_the_wrong_size_is_refused_naming_both_layouts():
    with L2fwd() as f:
        go = GO_SEED.pack(Outif=7, DstMac=bytes.fromhex("000011223344"))
        with pytest.raises(MapError) as e:
            f.set_l2fwd_raw("192.168.0.1", go, layout=GO_SEED)
        assert str(e.value) == (
            "update l2fwd_map: value is 16 bytes (go struct {Outif int; DstMac [6]byte} { i64 Outif @0; "
            "u8 DstMac[6] @8; } (16 bytes, 2 padding)), the map's value is 12 bytes (struct fwd { u32 outif "
            "@0; u8 dst_mac[6] @4; } (12 bytes, 2 padding)); lay the value out as the map's struct (e.g. u32, not "
            "a 64-bit int, for a C u32)")
        assert f.l2fwd_entries() == {}, "a refused value must not reach the map"
        f.set_l2fwd_raw("192.168.0.1", go[:12])                       # the seed's truncated write: accepted
        assert f.l2fwd_entries() == {"192.168.0.1": {"outif": 7, "dst_mac": "00:00:00:00:00:00"}}


def test_map_entries_are_what_bpftool_shows(lab):
    with L2fwd() as f:
        veth2 = lab.iface("fwd/veth2")
        f.route("192.168.0.1", via=veth2, mac="00:00:11:22:33:44")
        dump = json.loads(subprocess.run(["bpftool", "-j", "map", "dump", "id", str(f.map("l2fwd_map").info.id)],
                                         check=True, capture_output=True, text=True).stdout)
        assert [(e["key"], e["value"]) for e in dump] == [
            (["0xc0", "0xa8", "0x00", "0x01"],
             [f"0x{veth2.ifindex:02x}", "0x00", "0x00", "0x00", "0x00", "0x00", "0x11", "0x22", "0x33", "0x44",
              "0x00", "0x00"])]
        tx = f.map("txport_map")
        assert tx.lookup(veth2.ifindex.to_bytes(4, "little")) == veth2.ifindex.to_bytes(4, "little")


def test_txport_refuses_an_ifindex_the_devmap_cannot_hold(lab):
    from dataclasses import replace
    far = replace(lab.iface("fwd/veth2"), ifindex=64)
    with L2fwd() as f, pytest.raises(MapError, match=r"update txport_map\[64\]: ifindex 64 of fwd/veth2 does not "
                                                    r"fit the devmap \(keys 0..63\); raise txport_map's max_entries"):
        f.set_txport(far)


def test_maps_are_emptied_between_users_and_compiled_once_per_process(lab):
    with L2fwd() as f:
        f.route("192.168.0.1", via=lab.iface("fwd/veth2"), mac="00:00:11:22:33:44")
        count = bccload.compile_count
    with L2fwd() as f:
        assert f.l2fwd_entries() == {}
        assert f.map("txport_map").items() == [(k, None) for k, _ in f.map("txport_map").items()]
        assert bccload.compile_count == count, "the second user must reuse the compiled program"


def test_two_users_of_one_program_at_once_are_refused():
    with L2fwd(), pytest.raises(Exception, match="use l2fwd.c: another user in this process holds it"):
        L2fwd()


def test_process_stays_in_the_root_namespace(lab):
    home = os.stat("/proc/self/ns/net").st_ino
    with lab.ns("fwd").entered():
        assert os.stat("/proc/thread-self/ns/net").st_ino != home
    assert os.stat("/proc/thread-self/ns/net").st_ino == home


def test_map_layouts_come_from_the_programs_btf():
    with L2fwd() as f:
        value = f.map("l2fwd_map").value_layout
        assert (value.name, value.size, value.fields) == ("struct fwd", 12, fw.FWD.fields)
        assert f.map("l2fwd_map").key_layout.describe() == "u32 (4 bytes)"
        assert f.map("verdict_cnt").value_layout.describe() == "u64 (8 bytes)"
        assert f.map("l2fwd_map").info.btf_id == f.info.btf_id != 0


def test_a_forwarder_whose_struct_differs_is_refused_at_load(tmp_path):
    src = tmp_path / "l2fwd-wide.c"
    src.write_text(fw.L2FWD_SOURCE.read_text().replace("    u32 outif;", "    u64 outif;"))
    with pytest.raises(MapError, match=r"check layout of l2fwd_map value of l2fwd-wide.c: struct fwd \{ u32 outif "
                                       r"@0; u8 dst_mac\[6\] @4; \} \(12 bytes, 2 padding\) differs from the map's "
                                       r"struct fwd \{ u64 outif @0; u8 dst_mac\[6\] @8; \} \(16 bytes, 2 padding\)"):
        L2fwd(Program(src, "xdp_l2fwd"))
    assert Program(src, "xdp_l2fwd").object_key not in Use._in_use, "a refused forwarder is released"


def test_queues_per_end_in_python_and_in_lab_files(tmp_path):
    """`queues = N` sets both queue counts of one end; the kernel's device has them."""
    from lab.spec import load
    assert (End("a", "v0", queues=4).rx_queues, End("a", "v0", queues=4).tx_queues) == (4, 4)
    f = tmp_path / "q.toml"
    f.write_text('[[veth]]\na = { ns = "a", name = "v0", queues = 4 }\nb = { ns = "b", name = "v1", queues = 2 }\n')
    with build(load(f).topology) as lab:
        for key, n in (("a/v0", 4), ("b/v1", 2)):
            i = lab.iface(key)
            queues = sorted(os.listdir(os.path.join(i.ns.sysfs, "class/net", i.name, "queues")))
            assert queues == [f"rx-{q}" for q in range(n)] + [f"tx-{q}" for q in range(n)], queues
    f.write_text('[[veth]]\na = { ns = "a", name = "v0", queues = "4" }\nb = { ns = "b", name = "v1" }\n')
    with pytest.raises(TopologyError, match="key 'queues': expected an integer, got the str '4'"):
        load(f)


def test_send_each_checks_once_then_sends_every_frame_in_order_or_none(lab):
    from lab.errors import DataplaneError
    from lab.packets import udp_bytes
    checked = []
    lab.checks.append(lambda: checked.append(1))
    tap = lab.capture("fwd/veth0")
    frames = [udp_bytes(payload=b"frame-%d" % i) for i in range(3)]
    lab.port("net1/veth1").send_each(frames)
    tap.expect(frames[0])
    tap.expect(frames[1])
    tap.expect(frames[2])
    assert tap.received == frames and checked == [1]
    with pytest.raises(DataplaneError, match=r"send 5-byte frame on net1/veth1: shorter than an Ethernet header"):
        lab.port("net1/veth1").send_each([frames[0], b"short"])
    tap.expect_none()
    assert checked == [1], "a refused batch is refused before the preflight and before any frame"


def test_a_maps_entries_are_read_once_within_one_reading(lab):
    from lab import bpfsys, maps
    with L2fwd() as f:
        tx, veth2 = f.map("txport_map"), lab.iface("fwd/veth2")
        f.set_txport(veth2)
        keys = tx.keys()
        assert bpfsys.lookup_each(tx.fd, keys, 4) == [tx.lookup(k) for k in keys]
        assert [k for k, v in tx.items() if v is not None] == [veth2.ifindex.to_bytes(4, "little")]
        with maps.one_reading():
            first = tx.items()
            tx.delete(veth2.ifindex.to_bytes(4, "little"))
            assert tx.items() == first, "read once within the reading"
        assert all(v is None for _, v in tx.items()), "and afresh after it"


def test_a_sessions_programs_stay_parked_in_the_xdp_dispatcher_until_it_ends(lab):
    """The lab fixture turned parking on (lab.xdp.Parking): the first attach of a program also
    attaches it, in skb mode, to a down veth of the process's parking namespace, where it
    stays after the test detaches it, never runs, and goes when parking ends."""
    from lab import rtnl
    assert xdp.park_programs() is None
    parking = xdp._parking.get()
    p = XdpProgram(XDP_PASS)
    try:
        p.attach(lab.iface("fwd/veth0"), "drv").close()
        where = parking.parked[p.info.id]
        assert rtnl.link_xdp(parking.ns, where) == (2, p.info.id), "attached in skb mode (XDP_ATTACHED_SKB)"
        assert rtnl.link_operstate(parking.ns, where) == "DOWN"
        p.attach(lab.iface("fwd/veth0"), "skb").close()
        assert list(parking.parked).count(p.info.id) == 1, "parked once"
    finally:
        p.close()
    name = parking.ns.name
    xdp.unpark_programs()
    assert name not in netns.list_names()


def test_assert_verdicts_names_each_verdict_that_differs():
    from lab.errors import LabError
    from lab.l2fwd.forwarder import assert_verdicts
    with L2fwd() as f:
        assert assert_verdicts(f) == dict.fromkeys(fw.VERDICTS, 0)
        with pytest.raises(AssertionError, match=r"verdicts differ from the expectation:\n  pass: 0 \(expected 5\)\n"
                                                 r"  redirect: 0 \(expected 100\)\nevery verdict that moved: none"):
            assert_verdicts(f, {"pass": 5}, redirect=100)
        with pytest.raises(LabError, match=r"check verdicts forwarded: no such verdict; use aborted, drop, pass"):
            assert_verdicts(f, forwarded=1)
