"""`python -m lab ...`: the lab outside pytest."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from .errors import LabError

if TYPE_CHECKING:
    from .built import Interface, Lab
    from .packets import Packet
    from .uplab import State


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line in the lab's form: "python -m lab send: ..."."""

    def error(self, message: str) -> "NoReturn":
        self.exit(2, f"{self.prog}: {one_line(message)}; see {self.prog} --help\n")


def one_line(text: str) -> str:
    """`text` with control characters (a newline typed into an argument) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def ipv4(text: str) -> str:
    """An IPv4 address as typed (never a name: nothing goes to DNS)."""
    import ipaddress
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address (write it as 192.168.0.1)") from None


def port(text: str) -> int:
    n = _int(text, "port")
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port {n} is not between 1 and 65535")
    return n


def positive(text: str) -> int:
    n = _int(text, "count")
    if not 1 <= n <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{n} is not a count from 1 to {MAX_COUNT:,}")
    return n


def queue(text: str) -> int:
    n = _int(text, "queue")
    if not 0 <= n < 64:
        raise argparse.ArgumentTypeError(f"queue {n} is not between 0 and 63")
    return n


def seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return v


MAX_COUNT = 1_000_000_000


def _int(text: str, what: str) -> int:
    """A whole number written in ASCII digits (Python's int() also takes '٣')."""
    import re
    if not re.fullmatch(r"-?[0-9]+", text.strip()):
        raise argparse.ArgumentTypeError(f"{what} {text!r} is not a whole number")
    return int(text)


def _repro(args: argparse.Namespace) -> int:
    from .l2fwd.repro import CASES, run_case  # the l2fwd kit's cases
    if args.list or not args.name:
        width = max(map(len, CASES))
        for c in CASES.values():
            print(f"{c.name:<{width}}  {c.mode}  {c.summary}")
        return 0
    case = CASES.get(args.name)
    if case is None:
        print(f"python -m lab repro {args.name}: no such reproduction; `python -m lab repro --list` lists them",
              file=sys.stderr)
        return 2
    print(f"{case.name}: {case.summary}")
    print(f"kernel {os.uname().release}, l2fwd on fwd/veth0 in {case.mode} mode, peer of fwd/veth2: {case.peer}")
    print(f"sending {args.frames} frames net1/veth1 -> 192.168.0.1 ...", flush=True)
    o, explanation = run_case(case, args.frames)
    dst = ":".join(f"{b:02x}" for b in o.arrived[0][:6]) if o.arrived else "-"
    print(f"\narrived in net2/veth3: {len(o.arrived)} of {o.sent} (destination MAC {dst})")
    print("verdicts: " + ", ".join(f"{k} {v}" for k, v in o.verdicts.items()))
    print("\ncounters that moved (delta):")
    print(o.delta.table())
    print("\nwhat the kernel said (its tracepoints, every redirect followed):")
    if o.fates is None:
        print("  (not recorded on this machine: see `python -m lab why` for the reason)")
    else:
        print(o.fates.table())
        print(o.fates.by_send())
    print("\n" + o.notes[0])
    print("\nwhat happened:")
    print(textwrap.fill(explanation, width=100))
    return 0


def _progress(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def _up(args: argparse.Namespace) -> int:
    from . import uplab
    state = uplab.up(args.file, args.name, _progress)
    print(f"lab {state['name']} is up: " + ", ".join(f"{k}={v}" for k, v in state["namespaces"].items()))
    print("next: python -m lab status | send | capture | dump | trace | exec NS -- CMD | down")
    return 0


def _down(args: argparse.Namespace) -> int:
    """Runs to the end whatever signal comes: a half-removed lab helps nobody."""
    from . import uplab
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        print(f"lab {uplab.down(args.lab, _progress)} is down", flush=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return 0


def _status(args: argparse.Namespace) -> int:
    from . import uplab
    if args.netns:
        from . import existing, programs
        lab = existing.open_existing(args.netns, args.iface)
        try:
            print(existing.status_text(lab))
        finally:
            lab.close()
            programs.close_objects()
        return 0
    if args.iface:
        raise LabError("show interfaces", "--iface needs --netns", "give the namespace: --netns net1 --iface veth0")
    print(uplab.status_text(uplab.find(args.lab)))
    return 0


def _why(args: argparse.Namespace) -> int:
    """Watch the kernel's fates on a lab (or existing namespaces) while frames flow."""
    import json

    from . import existing, fates, uplab
    from .built import watch_fates
    from .counters import Snapshot
    if not args.src and (args.to or args.count or args.kind != "udp"):
        raise LabError("send frames", "--to, --count and --kind describe frames to send, and no --from says where "
                       "from", "add --from NS/IF, or leave them out to watch (--watch SECONDS)")
    if args.netns:
        if args.src:
            raise LabError("send frames into existing namespaces", "`why --netns` only watches: it changes nothing "
                           "there, traffic included", "send your own traffic while it watches (--watch SECONDS)")
        lab = existing.open_existing(args.netns, args.iface)
        what = f"namespace(s) {', '.join(args.netns)}"
    else:
        if args.iface:
            raise LabError("watch interfaces", "--iface needs --netns",
                           "give the namespace: --netns net1 --iface veth0")
        state = uplab.find(args.lab)
        lab = uplab.attach(state)
        what = f"lab {state['name']}"
    try:
        if not args.netns:
            existing.adopt_all(lab)
        watch_fates(lab, "on" if args.no_paths else "paths")
        if lab.fates_problem is not None:
            raise LabError(f"watch the fates of {what}", lab.fates_problem,
                           "the counters still tell: python -m lab status")
        before, counters = lab.fates(), Snapshot.of(lab)
        if args.src:
            frame, iface = _frame(lab, args.src, args.kind, args.to, args.port)
            port = lab.port(iface.key)
            port.send(frame, count=args.count or 1)
            _drain(lab, args.settle)
            since = f"while `lab why` sent {args.count or 1} frame(s) from {iface.key}"
        else:
            print(f"watching {what} for {args.watch} s (Ctrl-C to stop early)...", file=sys.stderr, flush=True)
            try:
                _drain(lab, args.watch)
            except KeyboardInterrupt:
                pass
            since = f"while `lab why` watched {what}"
        d, moved = lab.fates() - before, counters.again() - counters
        if args.json:
            sends = [{"send": x.seq, "where": x.where, "count": x.count, "bytes": x.raw.hex()} for x in lab.sends]
            print(json.dumps({**fates.to_json(d), "sends": sends, "counters": moved.moved()}, indent=2))
        else:
            print(fates.story(lab, d, moved, since))
    finally:
        lab.close()
        fates.close()
        from . import programs
        programs.close_objects()
    return 0


def _dump(args: argparse.Namespace) -> int:
    import json

    from . import uplab
    state = uplab.find(args.lab)
    lab = uplab.attach(state)
    try:
        maps = uplab.maps_of(lab)
    finally:
        lab.close()
    try:
        if not maps:
            raise LabError(f"dump the maps of lab {state['name']}", "no XDP program with maps is attached in it",
                           "add a [[program]] to its file, or attach one")
        if args.map is not None and args.map not in maps:
            raise LabError(f"dump map {args.map}", "no program of the lab has such a map",
                           f"use one of {', '.join(maps)}")
        chosen = {k: v for k, v in maps.items() if args.map in (None, k)}
        if args.json:
            print(json.dumps(uplab.dump_json(chosen), indent=2, default=lambda b: b.hex(":")))
        else:
            print("\n\n".join(m.dump() for m in chosen.values()))
    finally:
        uplab.close_maps(maps)
    return 0


def _trace(args: argparse.Namespace) -> int:
    import time

    from . import uplab
    state = uplab.find(args.lab)
    tag = state.get("trace_tag")
    if tag is None:
        raise LabError(f"trace lab {state['name']}", "no program of the lab has a trace_tag map to tag its "
                       "bpf_printk lines with", "build it with its debug flag (cflags = [\"-DL2FWD_DEBUG\"] "
                       "for bpf/l2fwd.c), then down and up")
    marker = f"l2fwd[{tag}] "
    print(f"bpf_printk lines of lab {state['name']} (Ctrl-C to stop):", file=sys.stderr, flush=True)
    from .trace import follow
    seen, deadline = 0, time.monotonic() + args.timeout if args.timeout else None
    try:
        for line in follow(marker):
            if line:
                print(line.strip(), flush=True)
                seen += 1
            if (args.count is not None and seen >= args.count) or (deadline and time.monotonic() > deadline):
                break
    except KeyboardInterrupt:
        pass
    return 0


def _lab_iface(state: "State", key: str) -> "tuple[Lab, Interface]":
    from . import uplab
    lab = uplab.attach(state)
    try:
        return lab, lab.iface(key)
    except LabError:
        lab.close()
        raise


def _drain(lab: "Lab", seconds: float) -> None:
    """Wait `seconds`, reading the kernel's dropped frames as they come (other traffic may
    fill the ring buffer meanwhile)."""
    import time
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        if lab._recorder is not None:
            lab._recorder.consume()


def _frame(lab: "Lab", src: str, kind: str, to: str | None, port: int) -> "tuple[Packet, Interface]":
    """The frame `send` and `why` put on interface `src` of a lab, and that interface."""
    from .packets import arp_request, ipv6_udp_frame, udp_frame
    iface = lab.iface(src)
    peer = lab.peer(iface.key)
    if kind == "udp":
        if not to:
            raise LabError("send udp frames", "no destination", "give --to 192.168.0.1")
        return udp_frame(eth_src=iface.mac, eth_dst=peer.mac, ip_src=iface.ip or "0.0.0.0", ip_dst=to,
                         dport=port), iface
    if kind == "arp":
        target = to or peer.ip
        if not target:
            raise LabError("send arp frames", f"no address to ask for: {peer.key} has none", "give --to 192.168.0.1")
        return arp_request(eth_src=iface.mac, ip_src=iface.ip or "0.0.0.0", ip_dst=target), iface
    return ipv6_udp_frame(eth_src=iface.mac, eth_dst=peer.mac), iface


def _send(args: argparse.Namespace) -> int:
    from . import uplab
    from .dataplane import Port
    lab, iface = _lab_iface(uplab.find(args.lab), args.src)
    try:
        frame, _ = _frame(lab, args.src, args.kind, args.to, args.port)
        port = Port(iface)
        try:
            done = 0
            while done < args.count:
                n = min(args.count - done, 100_000)
                port.send(frame, count=n, queue=args.queue)
                done += n
                if args.count > 100_000:
                    _progress(f"sent {done} of {args.count}")
        finally:
            port.close()
        on = f" on tx queue {args.queue}" if args.queue is not None else ""
        print(f"sent {args.count} {args.kind} frame(s) of {len(bytes(frame))} bytes from {iface.key}{on} "
              f"({frame.summary()})")
    finally:
        lab.close()
    return 0


def _capture(args: argparse.Namespace) -> int:
    import time

    from . import uplab
    from .dataplane import Capture
    from .packets import summary
    if args.pcap:           # before any frame: a path that cannot be written fails now, not at the end
        try:
            open(args.pcap, "wb").close()
        except OSError as e:
            raise LabError(f"write pcap file {args.pcap}", e.strerror or str(e),
                           "give a file in a folder that exists and is writable") from None
    lab, iface = _lab_iface(uplab.find(args.lab), args.iface)
    cap = Capture(iface)
    print(f"capturing what {iface.key} receives (Ctrl-C to stop)...", file=sys.stderr, flush=True)
    shown, deadline = 0, time.monotonic() + args.timeout if args.timeout else None
    try:
        while args.count is None or len(cap.received) < args.count:
            if deadline and time.monotonic() > deadline:
                break
            cap.poll(0.1)
            for raw in cap.received[shown:]:
                if not args.pcap:
                    print(f"{summary(raw)}, {len(raw)} bytes", flush=True)
            shown = len(cap.received)
    except KeyboardInterrupt:
        pass
    finally:
        if args.pcap:
            cap.write_pcap(args.pcap)
        print(f"{len(cap.received)} frame(s) received, {cap.drops} dropped by the capture"
              + (f", written to {args.pcap}" if args.pcap else ""), file=sys.stderr)
        cap.close()
        lab.close()
    return 0


def _exec(args: argparse.Namespace) -> int:
    from . import uplab
    state = uplab.find(args.lab)
    full = state["namespaces"].get(args.ns)
    if full is None:
        raise LabError(f"run a command in namespace {args.ns}", f"lab {state['name']} has no such namespace",
                       f"use one of {', '.join(state['namespaces'])}")
    cmd = args.cmd
    if not cmd:
        raise LabError(f"run a command in namespace {args.ns}", "no command", "write: exec fwd -- ip -s link")
    import shutil
    if shutil.which(cmd[0]) is None:
        raise LabError(f"run {cmd[0]} in namespace {args.ns}", "no such command (not on PATH, or not executable)",
                       "give a command that exists, e.g. ip -s link")
    os.execvp("ip", ["ip", "netns", "exec", full, *cmd])     # a list, never a shell
    return 127


def _clean(args: argparse.Namespace) -> int:
    from . import sweep, uplab
    from .netns import sandbox
    for state in uplab.unfinished():          # labs whose `up` or `down` was killed part-way
        uplab.down(state["name"])
        print(f"finished removing lab {state['name']} (left half-"
              f"{'built' if state.get('phase') == 'building' else 'removed'} by pid {state.get('pid')})")
    found = sweep.leftovers()
    removed = sweep.sweep(include_live=args.force)
    sandboxed = [] if sandbox() else sweep.sweep_sandboxes()      # what a killed test run's sandboxes hold
    for r in sandboxed:
        print(f"removed {r.netns} (owner pid {r.pid}, gone; its sandbox's owner too)")
    for r in removed:
        who = r.owner or f"owner pid {r.pid}, {'running' if r.alive else 'gone'}"
        print(f"removed {r.netns} ({who})")
    if args.force:
        for name in uplab.running():
            uplab.state_path(name).unlink()
            sweep.remove_pins(f"{sweep.pin_root()}/up-{name}")
    kept = [f for f in found if f.alive and not args.force]
    for k in kept:
        if k.owner:
            state = uplab.read_state(k.owner[3:]) or {}
            why = f"lab {k.owner[3:]} is up (`python -m lab down`)" if state.get("phase", "up") == "up" \
                else uplab.busy(state)
        else:
            why = f"its owner pid {k.pid} is still running"
        print(f"kept {k.netns}: {why}; --force removes it")
    if not found and not sandboxed:
        print("nothing to clean: no namespace recorded by the lab")
    return 0


def _kernels(args: argparse.Namespace) -> int:
    from . import kernels
    return kernels.main(args.kernel or kernels.DEFAULT, args.scenarios, not args.no_host, args.kvm, args.vm_timeout)


def _bench(args: argparse.Namespace) -> int:
    from .l2fwd import bench  # the l2fwd kit's benchmark
    return bench.main(args.quick, args.json, args.plot, args.suite, args.smoke)


def _lab_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lab", default=None, help="the lab (default: the only one up)")


def _command(sub: "argparse._SubParsersAction[_Parser]", name: str, func: "Callable[[argparse.Namespace], int]",
             lab: bool, help: str, epilog: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand running `func`, with --lab when it works on a lab that is up."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, epilog=epilog, description=description)
    if lab:
        _lab_option(p)
    p.set_defaults(func=func)
    return p


def _frame_options(p: argparse.ArgumentParser, count: int | None) -> None:
    """The frames `send` and `why --from` put on the wire (_frame)."""
    p.add_argument("--to", type=ipv4, help="their destination IPv4 address (udp, arp)")
    p.add_argument("--kind", choices=("udp", "arp", "ipv6"), default="udp", help="the frame (default udp)")
    p.add_argument("--port", type=port, default=5678, help="UDP destination port")
    p.add_argument("--count", type=positive, default=count, help="how many to send (default 1)")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m lab", description="The XDP forwarder lab outside pytest.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = _command(sub, "repro", _repro, False, help="reproduce a case of vanishing frames and explain it",
                 description="Build the seed topology, run one case, print the counters and what the "
                             "kernel did, tear everything down.",
                 epilog="example: python -m lab repro native-redirect-no-peer")
    p.add_argument("name", nargs="?", help="the case (see --list)")
    p.add_argument("--list", action="store_true", help="list the cases")
    p.add_argument("--frames", type=positive, default=1000, help="frames to send (default 1000)")
    p = _command(sub, "clean", _clean, False, help="remove what lab processes left behind",
                 description="Remove the namespaces (with their veths, XDP attachments and sysfs mounts) "
                             "that the lab recorded and whose owning process is gone. Namespaces the lab "
                             "did not record are never touched; labs that are up stay up.",
                 epilog="example: python -m lab clean")
    p.add_argument("--force", action="store_true", help="also remove those of running processes and labs that are up")
    p = _command(sub, "up", _up, False, help="build a lab from a TOML file and leave it running",
                 description="Build the namespaces, veths and forwarder of a lab file, program its maps, "
                             "and leave it all running for the other commands.",
                 epilog="example: python -m lab up topologies/seed.toml")
    p.add_argument("file", nargs="?", default="topologies/seed.toml", help="lab file (default topologies/seed.toml)")
    p.add_argument("--name", help="the lab's name (default: the file's name = ...)")
    p = _command(sub, "down", _down, True, help="take a lab down", epilog="example: python -m lab down")
    p = _command(sub, "status", _status, True, help="namespaces, links, addresses, XDP and counters of a lab",
                 description="A lab that is up, or (--netns) namespaces the lab did not make, read-only: the "
                             "XDP programs attached there and their modes, the preflight over their redirect "
                             "targets, their maps decoded from BTF.",
                 epilog="example: python -m lab status; python -m lab status --netns net1 --iface veth0")
    p.add_argument("--netns", action="append", metavar="NAME", help="an existing namespace (repeat for several)")
    p.add_argument("--iface", action="append", metavar="IF", help="only this interface of it (repeat)")
    p = _command(sub, "why", _why, True, help="where did the frames go: the kernel's fates while frames flow",
                 description="Record what the kernel does with frames on a lab's interfaces (XDP "
                             "exceptions, redirects and their errors, transmits, skb drops with their reason "
                             "and kernel function) while it sends frames (--from) or while you send your own "
                             "(--watch). --netns looks at namespaces the lab did not make, changing nothing "
                             "there.",
                 epilog="example: python -m lab why --from net1/veth1 --to 192.168.0.1 --count 100; "
                        "python -m lab why --netns net1 --watch 10 --json")
    p.add_argument("--netns", action="append", metavar="NAME", help="an existing namespace (repeat for several)")
    p.add_argument("--iface", action="append", metavar="IF", help="with --netns: only this interface (repeat)")
    p.add_argument("--from", dest="src", metavar="NS/IF", help="send frames from this interface of the lab")
    _frame_options(p, count=None)
    p.add_argument("--settle", type=seconds, default=0.5, help="seconds to wait for the frames' fates (default 0.5)")
    p.add_argument("--watch", type=seconds, default=10.0, help="without --from: seconds to watch (default 10)")
    p.add_argument("--no-paths", action="store_true", help="do not follow every successful redirect (cheaper)")
    p.add_argument("--json", action="store_true", help="JSON instead of text")
    p = _command(sub, "dump", _dump, True, help="the forwarder's maps, raw and decoded (as bpftool map dump)",
                 epilog="example: python -m lab dump l2fwd_map --json")
    p.add_argument("map", nargs="?", help="one map (default: all)")
    p.add_argument("--json", action="store_true", help="JSON instead of text")
    p = _command(sub, "trace", _trace, True, help="the forwarder's bpf_printk lines, live, until Ctrl-C",
                 description="Follow the lab's bpf_printk lines as they appear. Reads the kernel's trace "
                             "buffer without consuming it (/sys/kernel/tracing/trace, as the pytest fixtures "
                             "do), never trace_pipe: a test session running at the same time keeps its lines.",
                 epilog="example: python -m lab trace")
    p.add_argument("--count", type=positive, help="stop after this many lines")
    p.add_argument("--timeout", type=seconds, help="stop after this many seconds")
    p = _command(sub, "send", _send, True, help="send frames from an interface of the lab",
                 epilog="example: python -m lab send net1/veth1 --to 192.168.0.1 --count 1000")
    p.add_argument("src", metavar="NS/IF", help="the interface to send from, e.g. net1/veth1")
    _frame_options(p, count=1)
    p.add_argument("--queue", type=queue, help="the transmit queue to send on (its veth peer receives on the same "
                                               "queue in drv mode; a program in skb mode sees rx_queue_index "
                                               "queue-1, 0 for queues 0 and 1); default: where the flow hashes to")
    p = _command(sub, "capture", _capture, True, help="show or save what an interface of the lab receives",
                 epilog="example: python -m lab capture net2/veth3 --count 10 --pcap out.pcap")
    p.add_argument("iface", metavar="NS/IF", help="the interface, e.g. net2/veth3")
    p.add_argument("--count", type=positive, help="stop after this many frames")
    p.add_argument("--timeout", type=seconds, help="stop after this many seconds")
    p.add_argument("--pcap", help="write the frames to this pcap file instead of showing them")
    p = _command(sub, "exec", _exec, True, help="run a command inside a namespace of the lab",
                 epilog="example: python -m lab exec net1 -- ping -c 1 192.168.1.1")
    p.add_argument("ns", help="the namespace's short name, e.g. fwd")
    p.add_argument("cmd", nargs="*", help="-- then the command (everything after -- is the command)")
    p = _command(sub, "kernels", _kernels, False,
                 help="run the scenarios on the host kernel and in VMs on Debian's kernels",
                 description="Boot one virtme-ng VM per kernel over this root file system, run the scenarios "
                             "inside, and print scenario x kernel with the counters the drop scenarios saw.",
                 epilog="example: python -m lab kernels --kernel 6.1 --no-host -- scenarios/test_drops.py "
                        "--lab-forwarders=bcc")
    p.add_argument("scenarios", nargs="*", default=["scenarios/"],
                   help="pytest arguments, after -- when they start with - (default scenarios/)")
    p.add_argument("--kernel", action="append", help="5.10, 6.1, 6.12 or an exact version (repeat; default all three)")
    p.add_argument("--no-host", action="store_true", help="skip the host kernel")
    p.add_argument("--kvm", choices=("auto", "on", "off"), default="auto", help="use KVM (auto: where it boots)")
    p.add_argument("--vm-timeout", type=seconds, default=3600.0, metavar="SECONDS",
                   help="stop a VM's pytest after this long, and kill the VM two minutes later (default 3600)")
    p = _command(sub, "bench", _bench, False, help="measure the lab's overhead and the forwarder's Mpps",
                 description="Measure, on this machine: lab set-up against an ip/bpftool script, bcc "
                             "compile and attach times, injection and capture rates against scapy, the "
                             "forwarder's Mpps in skb and drv mode against an XDP_DROP ceiling (frames made "
                             "in the kernel), and the scenario suite serial and with -n 2.",
                 epilog="example: python -m lab bench --quick --json bench.json --plot bench.png")
    p.add_argument("--quick", action="store_true", help="fewer repetitions and frames (under 2 minutes)")
    p.add_argument("--smoke", action="store_true",
                   help="one repetition, a tenth of --quick's frames: every key, no figure to quote (the bench's test)")
    p.add_argument("--suite", action="append", metavar="PATH",
                   help="the scenarios the suite_* and scenario_* figures run (repeat; default scenarios/)")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot Mpps per mode and frame size")
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:                       # exec NS [--lab X] -- CMD ...: the command is all after --
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"python -m lab {args.command}: {one_line('unrecognized arguments: ' + ' '.join(unknown))}; see "
              f"python -m lab {args.command} --help", file=sys.stderr)
        return 2
    if rest:
        if args.command == "exec":
            args.cmd = rest
        elif args.command == "kernels":
            args.scenarios = [*args.scenarios, *rest] if args.scenarios != ["scenarios/"] else rest
        else:
            parser.error("only exec and kernels take arguments after --")
    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminated)  # unwind (and undo) as Ctrl-C does
    try:
        code: int = args.func(args)
        return code
    except LabError as e:      # one line, but a compiler's or verifier's log, which follows it
        from .errors import CompileError
        print(f"python -m lab {args.command}: {str(e) if isinstance(e, CompileError) else one_line(str(e))}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"python -m lab {args.command}: interrupted (SIGINT or SIGTERM): what it had made is undone; "
              "`python -m lab status` shows the labs that are up", file=sys.stderr)
        return 130
