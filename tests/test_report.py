"""The failure report: a deliberately failing scenario shows the whole report, keeps it
under --lab-artifacts with pcaps that tcpdump reads, and keeps bpf_printk lines with the
test that printed them even when two tests run at once (-n 2)."""
from __future__ import annotations

import subprocess
from pathlib import Path

from tests import subproc

pytestmark = subproc.SESSIONS


def run(tmp_path: Path, *args: str, target: str = "tests/failing/scenario_fails.py") -> subprocess.CompletedProcess:
    return subproc.run("-m", "pytest", "-q", "--no-header", target, f"--lab-artifacts={tmp_path}", *args)


def test_failing_scenarios_report_and_keep_artifacts(tmp_path):
    r = run(tmp_path, "-n", "2", "--lab-debug", "--lab-forwarders=bcc")
    out = r.stdout
    assert r.returncode == 1 and "2 failed" in out, out + r.stderr
    for section in ("lab counters", "lab xdp", "lab programs", "lab maps", "lab verdicts", "lab trace",
                    "lab fates", "lab artifacts"):
        assert section in out, f"{section} missing from the report:\n{out}"
    routed = tmp_path / "tests_failing_scenario_fails.py_test_fails_routed_bcc-skb"
    unrouted = tmp_path / "tests_failing_scenario_fails.py_test_fails_unrouted_bcc-skb"
    assert sorted(p.name for p in routed.iterdir()) == [
        "counters.txt", "fates.txt", "maps.txt", "net2_veth3.pcap", "programs.txt", "trace.txt", "verdicts.txt",
        "xdp.txt"]
    fates = (routed / "fates.txt").read_text()
    assert "send #1 on net1/veth1: 7 x 56 bytes, 02:00:00:00:01:02 > 02:00:00:00:01:01 IP / UDP" in fates, fates
    assert "7 x kfree_skb NO_SOCKET in __udp4_lib_rcv+0x" in fates and \
        "7 dropped on net2/veth3: kfree_skb NO_SOCKET" in fates and "as dropped: 02:00:00:00:01:02 > " \
        "00:00:11:22:33:44" in fates, "net2's stack drops the forwarded frames: no UDP socket listens"

    counters = (routed / "counters.txt").read_text()
    assert "net2/veth3" in counters and "rx_packets" in counters
    veth3 = counters.split("net2/veth3")[1]
    assert [ln.split() for ln in veth3.splitlines() if ln.strip().startswith("rx_packets")][0] == \
        ["rx_packets", "0", "7", "+7"]
    assert "xdpgeneric id" in (routed / "xdp.txt").read_text()
    maps = (routed / "maps.txt").read_text()
    assert "key: c0 a8 00 01  value:" in maps and "192.168.0.1 -> outif" in maps and "dst_mac 00:00:11:22:33:44" in maps
    assert (routed / "verdicts.txt").read_text().startswith("l2fwd.c:xdp_l2fwd: aborted 0, drop 0, pass 0, tx 0, "
                                                            "redirect 7,")
    assert (routed / "programs.txt").read_text().startswith("l2fwd.c:xdp_l2fwd: fwd/veth0 (skb, id ")

    pcap = subprocess.run(["tcpdump", "-nn", "-e", "-r", str(routed / "net2_veth3.pcap")], capture_output=True,
                          text=True, check=True).stdout.splitlines()
    assert len(pcap) == 7 and all("> 00:00:11:22:33:44" in line and "192.168.0.1.5678: UDP" in line
                                  for line in pcap), pcap

    # each test's trace holds its own lines only, though both ran at once
    t_routed, t_unrouted = (routed / "trace.txt").read_text(), (unrouted / "trace.txt").read_text()
    assert t_routed.count("c0a80001 to outif") == 7 and "c0a80063" not in t_routed, t_routed
    assert t_unrouted.count("no route for c0a80063") == 5 and "c0a80001" not in t_unrouted, t_unrouted
    assert len({ln.split("l2fwd[")[1].split("]")[0] for ln in t_routed.splitlines()}) == 1


def test_nothing_is_kept_for_passing_tests_unless_asked(tmp_path):
    target = "scenarios/test_forwarding.py::test_arp_is_passed_and_answered"
    r = run(tmp_path / "default", "--lab-forwarders=elf", target=target)
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout
    assert not (tmp_path / "default").exists()
    r = run(tmp_path / "all", "--lab-keep=all", "--lab-forwarders=elf", target=target)
    assert r.returncode == 0, r.stdout
    kept = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert kept == ["scenarios_test_forwarding.py_test_arp_is_passed_and_answered_elf-drv",
                    "scenarios_test_forwarding.py_test_arp_is_passed_and_answered_elf-skb"]
    assert (tmp_path / "all" / kept[0] / "net1_veth1.pcap").stat().st_size == 24 + 10 * (16 + 42)


def test_a_refusal_is_its_line_and_the_tests_line_not_a_traceback(tmp_path):
    """A LabError before any frame (here a program path with a typo) fails the test with the
    error's one line at the test's own line: no traceback through the lab, no lab report."""
    (tmp_path / "test_typo.py").write_text(
        "from lab.topology import End, Topology, Veth\n"
        "import pytest\n\n\n"
        "@pytest.fixture\ndef lab_topology():\n"
        "    return Topology((Veth(End('a', 'v0'), End('b', 'v1')),))\n\n\n"
        "def test_typo(lab, xdp_program):\n"
        "    xdp_program('drop9.bfp.o')\n")
    r = subproc.run("-m", "pytest", "-q", "-p", "lab.plugin", "--rootdir", str(tmp_path),
                    str(tmp_path / "test_typo.py"))
    out = r.stdout
    assert r.returncode == 1 and "1 failed" in out, out + r.stderr
    assert f"{tmp_path / 'test_typo.py'}:11: CompileError: load program drop9.bfp.o: " \
           f"{tmp_path / 'drop9.bfp.o'} does not exist; give the path" in out, out     # where it was looked for first
    assert "lab/programs.py" not in out and "lab counters" not in out, out
    long = subproc.run("-m", "pytest", "-q", "--tb=long", "-p", "lab.plugin", "--rootdir", str(tmp_path),
                       str(tmp_path / "test_typo.py"))
    assert "lab/programs.py" in long.stdout, "--tb=long keeps the traceback"
