"""`python -m lab ...`: the lab outside pytest."""
from __future__ import annotations

import argparse
import platform
import sys
import textwrap

from .errors import LabError


def _repro(args: argparse.Namespace) -> int:
    from .repro import CASES, run_case
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
    print(f"kernel {platform.release()}, l2fwd on fwd/veth0 in {case.mode} mode, peer of fwd/veth2: {case.peer}")
    print(f"sending {args.frames} frames net1/veth1 -> 192.168.0.1 ...", flush=True)
    o, explanation = run_case(case, args.frames)
    dst = ":".join(f"{b:02x}" for b in o.arrived[0][:6]) if o.arrived else "-"
    print(f"\narrived in net2/veth3: {len(o.arrived)} of {o.sent} (destination MAC {dst})")
    print("verdicts: " + ", ".join(f"{k} {v}" for k, v in o.verdicts.items()))
    print("\ncounters that moved (delta):")
    print(o.delta.table())
    print("\n" + o.notes[0])
    print("\nwhat happened:")
    print(textwrap.fill(explanation, width=100))
    return 0


def _clean(args: argparse.Namespace) -> int:
    from . import sweep
    found = sweep.leftovers()
    removed = sweep.sweep(include_live=args.force)
    for r in removed:
        print(f"removed {r.netns} (owner pid {r.pid}, {'running' if r.alive else 'gone'})")
    kept = [f for f in found if f.alive and not args.force]
    for k in kept:
        print(f"kept {k.netns}: its owner pid {k.pid} is still running (--force removes it)")
    if not found:
        print("nothing to clean: no namespace recorded by the lab")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import bench
    return bench.main(args.quick, args.json, args.plot)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description="The XDP forwarder lab outside pytest.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("repro", help="reproduce a case of vanishing frames and explain it",
                       description="Build the seed topology, run one case, print the counters and what the "
                                   "kernel did, tear everything down.",
                       epilog="example: python -m lab repro native-redirect-no-peer")
    p.add_argument("name", nargs="?", help="the case (see --list)")
    p.add_argument("--list", action="store_true", help="list the cases")
    p.add_argument("--frames", type=int, default=1000, help="frames to send (default 1000)")
    p.set_defaults(func=_repro)
    p = sub.add_parser("clean", help="remove what lab processes left behind",
                       description="Remove the namespaces (with their veths, XDP attachments and sysfs mounts) "
                                   "that the lab recorded and whose owning process is gone. Namespaces the lab "
                                   "did not record are never touched.",
                       epilog="example: python -m lab clean")
    p.add_argument("--force", action="store_true", help="also remove those of lab processes that still run")
    p.set_defaults(func=_clean)
    p = sub.add_parser("bench", help="measure the lab's overhead and the forwarder's Mpps",
                       description="Measure, on this machine: lab set-up against an ip/bpftool script, bcc "
                                   "compile and attach times, injection and capture rates against scapy, the "
                                   "forwarder's Mpps in skb and drv mode against an XDP_DROP ceiling (frames made "
                                   "in the kernel), and the scenario suite serial and with -n 2.",
                       epilog="example: python -m lab bench --quick --json bench.json --plot bench.png")
    p.add_argument("--quick", action="store_true", help="fewer repetitions and frames (under 2 minutes)")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot Mpps per mode and frame size")
    p.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LabError as e:
        print(f"python -m lab {args.command}: {e}", file=sys.stderr)
        return 1
