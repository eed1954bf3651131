"""The failure report: what a person hunting vanished frames looks at, collected from a
lab before it is torn down.

Sections (also written as files by `write()`):
  counters  every interface: before (the test's first snapshot, else 0 at creation), after,
            delta, as `ip -s -s link` and
            `ethtool -S` would show them
  xdp       attach state per interface: mode and program id, as `ip -d link` shows them
  programs  every program attached in the lab (loaded or adopted): where, in which mode, its
            id, and the kernel's run count and run time
  maps      every map of every program, raw bytes and decoded fields (bpftool map dump)
  verdicts  the verdict counters of programs that keep them (the l2fwd kit's)
  trace     the bpf_printk lines this test's programs printed (debug builds)
  fates     what the kernel said it did with the frames: per send, the path through interfaces
            and programs, the kernel's events (tracepoints) and where and why frames were
            dropped, with the counters that moved at each interface
  pcaps     one pcap file per capture (files only)
"""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from typing import TYPE_CHECKING

from . import fates, trace, xdp
from .counters import Snapshot

if TYPE_CHECKING:
    from .built import Lab

ALWAYS = ("rx_packets", "rx_bytes", "rx_dropped", "rx_errors", "tx_packets", "tx_bytes", "tx_dropped", "tx_errors")


def counters_table(lab: "Lab") -> str:
    """Counters since the test's first snapshot, or since creation (a new veth counts from 0)."""
    before = lab.snapshots[0] if lab.snapshots else None
    after = Snapshot.of(lab)
    out = []
    for key, i in lab.interfaces.items():
        was, now = (before.values.get(key, {}) if before else {}), after.values[key]
        out.append(f"{key}  (namespace {i.ns.name}, ifindex {i.ifindex}, {xdp.query(i)})")
        out.append(f"  {'counter':<28} {'before':>10} {'after':>10} {'delta':>10}")
        for c in sorted(set(now) | set(was)):
            b, a = was.get(c, 0), now.get(c, 0)
            if c in ALWAYS or a or b:
                mark = "   <--" if a != b and ("drop" in c or "err" in c) else ""
                out.append(f"  {c:<28} {b:>10} {a:>10} {a - b:>+10}{mark}")
    return "\n".join(out)


def xdp_table(lab: "Lab") -> str:
    return "\n".join(f"{key:<16} {xdp.query(i)}" for key, i in lab.interfaces.items())


def programs_table(lab: "Lab") -> str:
    out = []
    for p in lab.programs:
        runs, ns = p.run_stats()
        where = ", ".join(f"{i.key} ({mode}, id {pid})" for i, mode, pid in p.placements()) or "not attached"
        avg = f", {ns // runs} ns a run" if runs else ""
        out.append(f"{p.name}: {where}; ran {runs} times{avg}")
    return "\n".join(out) or "(no program is attached in the lab)"


def collect(lab: "Lab") -> dict[str, str]:
    """Every section of the report, as text."""
    sections = {"counters": counters_table(lab), "xdp": xdp_table(lab), "programs": programs_table(lab)}
    maps, verdicts, lines = [], [], []
    seen: set[int] = set()
    for p in lab.programs:
        mine = {n: m for n, m in p.maps.items() if m.info.id not in seen}
        seen.update(m.info.id for m in mine.values())
        if mine:
            maps.append(f"== maps of {p.name}\n" + "\n\n".join(m.dump() for m in mine.values()))
        counted = getattr(p, "verdicts", None)
        if counted is not None:
            verdicts.append(f"{p.name}: " + ", ".join(f"{k} {v}" for k, v in counted().items()))
        else:
            verdicts.append(f"{p.name}: keeps no verdict counters; the kernel counted {p.run_stats()[0]} runs")
        tag = getattr(p, "trace_tag", None)
        if tag is not None:
            lines += trace.tagged_lines(tag) or [f"(no bpf_printk line carries l2fwd[{tag}])"]
        elif counted is not None:
            lines.append(f"({p.name} was built without L2FWD_DEBUG: run pytest with --lab-debug "
                         "to record its bpf_printk lines)")
        else:
            lines.append(f"({p.name}: its bpf_printk lines are in /sys/kernel/tracing/trace, untagged)")
    none = "(no program is attached in the lab)"
    sections["maps"] = "\n\n".join(maps) or none
    sections["verdicts"] = "\n".join(verdicts) or none
    sections["trace"] = "\n".join(lines) or none
    sections["fates"] = fates_text(lab)
    return sections


def fates_text(lab: "Lab") -> str:
    """The fates since the test's first snapshot (else since the lab was built), told as
    paths, with the counters that moved over the same time."""
    if lab.fates_problem is not None:
        return f"(no fates: {lab.fates_problem})"
    now = lab.fates()
    after = Snapshot.of(lab)
    moved: Mapping[str, Mapping[str, int]]
    if lab.snapshots and lab.fate_marks:
        f, since = now - lab.fate_marks[0], "since the test's first counter snapshot"
        moved = after - lab.snapshots[0]
    else:
        f, since = now, "since the lab was built"
        moved = {k: {c: v for c, v in vals.items() if v} for k, vals in after.values.items()}
    return fates.story(lab, f, moved, since)


def safe_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:200]


def write(lab: "Lab", sections: dict[str, str], directory: str) -> list[str]:
    """Write the sections and one pcap per capture into `directory` (emptied first)."""
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    files = []
    for name, text in sections.items():
        path = os.path.join(directory, f"{name}.txt")
        with open(path, "w") as f:
            f.write(text + "\n")
        files.append(path)
    seen: dict[str, int] = {}
    for c in lab.captures:
        base = c.iface.key.replace("/", "_")
        seen[base] = seen.get(base, 0) + 1
        path = os.path.join(directory, f"{base}{'' if seen[base] == 1 else '-' + str(seen[base])}.pcap")
        c.write_pcap(path)
        files.append(path)
    return files
