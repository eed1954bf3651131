"""The lab for people: up, status, send, capture, dump, trace, exec, down, against a real lab
brought up from topologies/seed.toml, the way the README shows it."""
from __future__ import annotations

import json
import os
import subprocess
import time

from lab import netns, sweep, uplab
from lab.trace import tagged_lines
from tests import subproc

pytestmark = subproc.SESSIONS


def lab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subproc.run("-m", "lab", *args, timeout=timeout)


def background(*args: str) -> subprocess.Popen:
    return subproc.popen("-m", "lab", *args, env=subproc.child_env())






def test_a_person_brings_up_the_seed_lab_uses_it_and_takes_it_down(tmp_path):
    name = f"t{os.getpid()}"
    r = lab("up", "topologies/seed.toml", "--name", name)
    assert r.returncode == 0, r.stderr
    try:
        assert f"lab {name} is up" in r.stdout and "attaching to fwd/veth0 in drv mode" in r.stderr
        assert {f"xdplab-up-{name}+{ns}" for ns in ("net1", "fwd", "net2")} <= set(netns.list_names())
        assert {x.netns for x in sweep.leftovers() if x.owner == f"up:{name}"} == \
            {f"xdplab-up-{name}+{ns}" for ns in ("net1", "fwd", "net2")}, "an up lab is recorded, and never swept"
        again = lab("up", "topologies/seed.toml", "--name", name)
        assert again.returncode == 1 and f"bring up lab {name}: it is already up" in again.stderr

        trace = background("trace", "--lab", name, "--count", "6", "--timeout", "20")
        cap = background("capture", "net2/veth3", "--lab", name, "--count", "3", "--timeout", "20",
                         "--pcap", str(tmp_path / "out.pcap"))
        time.sleep(1.0)         # both readers open before the frames: a person starts them first too
        r = lab("send", "net1/veth1", "--lab", name, "--to", "192.168.0.1", "--count", "3")
        assert r.returncode == 0 and "sent 3 udp frame(s) of 56 bytes from net1/veth1" in r.stdout, r.stderr
        r = lab("send", "net1/veth1", "--lab", name, "--to", "192.168.0.1", "--queue", "1")
        assert r.returncode == 1 and r.stderr.strip().endswith(
            "send on net1/veth1 tx queue 1: net1/veth1 has 1 tx queue(s); send on queue 0, or give its end "
            "tx_queues=2 or more (queues=N sets both)"), r.stderr
        out, _ = cap.communicate(timeout=30)
        assert "3 frame(s) received, 0 dropped by the capture" in out, out
        pcap = subprocess.run(["tcpdump", "-nn", "-e", "-r", str(tmp_path / "out.pcap")], capture_output=True,
                              text=True).stdout.splitlines()
        assert len(pcap) == 3 and all("> 00:00:11:22:33:44" in p for p in pcap), pcap
        out, _ = trace.communicate(timeout=30)
        lines = [ln for ln in out.splitlines() if "bpf_trace_printk" in ln]
        assert len(lines) == 6 and sum("c0a80001 to outif 3" in ln for ln in lines) == 3, out
        tag = json.loads(uplab.state_path(name).read_text())["trace_tag"]
        assert len(tagged_lines(tag)) == 6, "`lab trace` consumed nothing: a test's report still has the lines"

        r = lab("status", "--lab", name)
        assert r.returncode == 0, r.stderr
        assert "veth0@net1/veth1  ifindex 2  02:00:00:00:01:01  192.168.1.1  UP  mtu 1500  xdp id" in r.stdout
        assert "rx_queue_0_xdp_redirect 3" in r.stdout and "TX: packets 3  bytes 168" in r.stdout, r.stdout

        r = lab("dump", "l2fwd_map", "--lab", name, "--json")
        [m] = json.loads(r.stdout)
        assert m["layout"] == "struct fwd { u32 outif @0; u8 dst_mac[6] @4; } (12 bytes, 2 padding)"
        assert m["entries"] == [{"key": "c0 a8 00 01", "value": "03 00 00 00 00 00 11 22  33 44 00 00",
                                 "key_decoded": "192.168.0.1",
                                 "value_decoded": {"outif": 3, "dst_mac": "00:00:11:22:33:44"}}]
        r = lab("dump", "--lab", name)
        assert "192.168.0.1 -> outif 3, dst_mac 00:00:11:22:33:44, padding 2 bytes" in r.stdout
        assert "name verdict_cnt" in r.stdout and "4 -> 3" in r.stdout, r.stdout
        r = lab("dump", "nope", "--lab", name)
        assert r.returncode == 1 and "dump map nope: no program of the lab has such a map; use one of" in r.stderr

        r = lab("exec", "fwd", "--lab", name, "--", "ip", "-br", "addr", "show", "veth0")
        assert r.returncode == 0 and "192.168.1.1/24" in r.stdout, r.stderr
    finally:
        r = lab("down", "--lab", name)
    assert r.returncode == 0 and f"lab {name} is down" in r.stdout, r.stderr
    assert not [n for n in netns.list_names() if n.startswith(f"xdplab-up-{name}+")]
    r = lab("status", "--lab", name)
    assert r.returncode == 1 and f"find lab {name}: it is not up" in r.stderr






def test_the_inspecting_commands_never_import_bcc_or_scapy():
    """status, dump, down and clean start fast: neither bcc (LLVM) nor scapy is imported
    (python -X importtime lists every module a command loads), here on a lab with a program
    and maps to show."""
    assert lab("up", "topologies/smac.toml", "--name", "imports").returncode == 0
    loaded = {}
    try:
        for args in (("status", "--lab", "imports"), ("dump", "--lab", "imports"), ("down", "--lab", "imports"),
                     ("clean",)):
            r = subproc.run("-X", "importtime", "-m", "lab", *args)
            assert r.returncode == 0, r.stderr
            loaded[args[0]] = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines()
                               if line.startswith("import time:")}
    finally:
        lab("down", "--lab", "imports")
    for command, modules in loaded.items():
        assert "lab.cli" in modules, (command, sorted(modules)[:20])
        assert not {m for m in modules if m.split(".")[0] in ("bcc", "scapy")}, command
