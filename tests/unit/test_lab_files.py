"""Lab files parsed and validated, names, and the kit's helpers refusing wrong types: no root,
no kernel objects."""
from __future__ import annotations

import pytest

from lab import names
from lab.errors import LabError, MapError, TopologyError
from lab.l2fwd.forwarder import L2fwd
from lab.l2fwd.seed import SEED, SEED_MAC
from lab.spec import load
from lab.topology import End
from tests import subproc


def test_the_seed_file_is_the_seed_topology():
    spec = load(subproc.ROOT / "topologies" / "seed.toml")
    assert spec.topology == SEED
    [p] = spec.programs
    assert (p.program.source.name, p.program.function, p.attach, p.mode) == \
        ("l2fwd.c", "xdp_l2fwd", ("fwd/veth0",), "drv")
    assert [(e.map, e.key, e.value) for e in spec.entries] == [
        ("txport_map", "fwd/veth2", "fwd/veth2"),
        ("l2fwd_map", "192.168.0.1", {"outif": "fwd/veth2", "dst_mac": "00:00:11:22:33:44"})]




@pytest.mark.parametrize("text, message", [
    ('[[veth]]\na = { ns = "a", name = "v0", ip = 5 }\nb = { ns = "b", name = "v1" }\n',
     "([[veth]] 1 a): key 'ip': expected a string, got the int 5; write ip as a string"),
    ('[[veth]]\na = { ns = "a", name = "v0", mtu = "9000" }\nb = { ns = "b", name = "v1" }\n',
     "([[veth]] 1 a): key 'mtu': expected an integer, got the str '9000'; write mtu as an integer"),
    ('[[veth]]\na = { ns = "a", name = 5 }\nb = { ns = "b", name = "v1" }\n',
     "([[veth]] 1 a): key 'name': expected a string, got the int 5"),
    ('[[veth]]\na = { ns = 5, name = "v0" }\nb = { ns = "b", name = "v1" }\n',
     "([[veth]] 1 a): key 'ns': expected a string, got the int 5"),
    ("veth = 5\n", "(top level): key 'veth': expected a list, got the int 5"),
    (subproc.GOOD_VETH + 'forwarder = "l2fwd"\n', "unknown keys ['forwarder']"),
    ('namespaces = "abc"\n' + subproc.GOOD_VETH, "key 'namespaces': expected a list, got the str 'abc'"),
    (subproc.GOOD_VETH + 'debug = "no"\n', "unknown keys ['debug']"),
    (subproc.GOOD_VETH + '[[program]]\nprogram = "nosuch.c"\nattach = "a/v0"\n',
     "[[program]] 1): load program nosuch.c: "),
    ('[[veth]]\na = { ns = "a", name = "v0", mac = "00:00:00:00:00:00" }\nb = { ns = "b", name = "v1" }\n',
     "'00:00:00:00:00:00': all zeros: the kernel refuses it for an interface (EADDRNOTAVAIL)"),
])
def test_each_bad_lab_file_fails_on_one_line_naming_the_key(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(TopologyError) as e:
        load(f)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_directory_is_not_a_lab_file(tmp_path):
    with pytest.raises(TopologyError, match="it is a directory; give a .toml file in it"):
        load(tmp_path)


def test_names_count_bytes_as_the_kernel_does():
    with pytest.raises(TopologyError, match=r"16 bytes in UTF-8 \(8 characters\), the kernel allows at most 15"):
        names.check_ifname("é" * 8)


def test_the_kits_helpers_refuse_wrong_types():
    with pytest.raises(TopologyError, match="encode l2fwd_map key 5: not a dotted-quad IPv4 address"):
        L2fwd.key(5)           # would be 0.0.0.5
    with pytest.raises(MapError, match="outif 'veth2' is a str; give an interface"):
        L2fwd.value("veth2", SEED_MAC)
    with pytest.raises(TopologyError, match="all zeros"):
        End("a", "v0", mac="00:00:00:00:00:00").validate()


def test_lab_errors_name_the_action_first():
    e = LabError("send 3 frames", "no lab is up", "start one")
    assert str(e) == "send 3 frames: no lab is up; start one"
