"""The command line's argument handling, before anything is built: help with an example for
every command, bad addresses, numbers, files and lab files refused on one line, fuzzed
command lines never a traceback. No root, no kernel objects."""
from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.l2fwd.repro import CASES
from tests import subproc

COMMANDS = ("up", "down", "status", "dump", "trace", "send", "capture", "exec", "clean", "repro", "bench", "why")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    r = subproc.lab_command(command, "--help")
    assert r.returncode == 0 and "example: python -m lab " in r.stdout, r.stdout


def test_bad_lab_files_name_the_place_and_the_fix(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[veth]]\na = { ns = "a", name = "this-name-is-too-long" }\n'
                   'b = { ns = "b", name = "v" }\n')
    r = subproc.lab_command("up", str(bad))
    assert r.returncode == 1
    assert ("name interface 'this-name-is-too-long' in namespace a: 21 bytes in UTF-8 (21 characters), the kernel "
            "allows at most 15 bytes") in r.stderr
    bad.write_text('name = "x"\n[[veth]]\na = { ns = "a", name = "v0", colour = "red" }\n'
                   'b = { ns = "b", name = "v" }\n')
    r = subproc.lab_command("up", str(bad))
    assert f"read lab file {bad} ([[veth]] 1 a): unknown keys ['colour']" in r.stderr
    r = subproc.lab_command("up", str(tmp_path / "missing.toml"))
    assert "no such file; give a path such as topologies/seed.toml" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["send", "net1/veth1", "--to", "300.1.1.1"], "python -m lab send: argument --to: '300.1.1.1' is not an IPv4 "
                                                  "address (write it as 192.168.0.1)"),
    (["send", "net1/veth1", "--to", "::1"], "python -m lab send: argument --to: '::1' is not an IPv4 address"),
    (["send", "net1/veth1", "--to", "example.com"], "python -m lab send: argument --to: 'example.com' is not an "
                                                    "IPv4 address"),
    (["send", "net1/veth1", "--to", "1.1.1.1", "--port", "70000"], "python -m lab send: argument --port: port "
                                                                   "70000 is not between 1 and 65535"),
    (["send", "net1/veth1", "--queue", "64"], "python -m lab send: argument --queue: queue 64 is not between 0 and 63"),
    (["send", "net1/veth1", "--count", "-1"],
     "python -m lab send: argument --count: -1 is not a count from 1 to 1,000,000,000"),
    (["capture", "net2/veth3", "--timeout", "nan"], "python -m lab capture: argument --timeout: nan is not a "
                                                    "positive number of seconds"),
    (["repro", "generic-redirect", "--frames", "x"], "python -m lab repro: argument --frames: count 'x' is not a "
                                                     "whole number"),
    (["capture", "net2/veth3", "--pcap", "/nonexistent/x.pcap"], "python -m lab capture: write pcap file "
                                                                 "/nonexistent/x.pcap: No such file or directory"),
])
def test_bad_arguments_fail_on_one_line_before_anything_happens(args, message):
    """Addresses never go to DNS, numbers are checked, output files are opened first."""
    r = subproc.lab_command(*args)
    assert r.returncode in (1, 2) and r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr


def test_list_names_every_case():
    r = subproc.lab_command("repro", "--list")
    assert r.returncode == 0
    assert [line.split()[0] for line in r.stdout.splitlines()] == list(CASES)


def test_unknown_case_names_the_fix():
    r = subproc.lab_command("repro", "no-such-case")
    assert r.returncode == 2
    assert r.stderr.strip() == ("python -m lab repro no-such-case: no such reproduction; `python -m lab repro "
                                "--list` lists them")


VOCABULARY = ["status", "dump", "send", "capture", "trace", "why", "repro", "down", "--to", "--count", "--port",
              "--kind", "--timeout", "--pcap", "--json", "--from", "--watch", "--frames", "--map", "net1/veth1",
              "x/y", "192.168.0.1", "300.1.1.1", "::1", "example.com", "-1", "0", "70000", "1e9", "nan", "é",
              "/nonexistent/x.pcap", "udp", "arp", "ipv6", "bogus"]


@settings(max_examples=2 * subproc.FUZZ_EXAMPLES, deadline=None, database=None)
@given(argv=st.lists(st.one_of(st.sampled_from(VOCABULARY), st.text(string.printable, max_size=6)), min_size=1,
                     max_size=6))
def test_fuzzed_command_lines_fail_on_one_line(argv):
    """No lab of this name is up: every command fails, or prints help, never a traceback."""
    if argv[0] in ("exec", "up", "clean", "bench", "kernels") or "--lab" in argv or "--netns" in argv:
        return       # these act on the machine: covered by their own tests
    rc, err = subproc.run_cli(*argv, "--lab", "fuzz-no-such-lab")
    assert rc in (0, 1, 2), (argv, rc, err)
    if rc:
        assert err.startswith("python -m lab") and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
