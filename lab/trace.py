"""bpf_printk lines of one test, from the kernel's trace buffer.

bpf_printk writes to the top-level trace buffer. Reading trace_pipe consumes it, so two
readers (two xdist workers) would split each other's lines; the lab reads the `trace` file
instead, which shows the same buffer without consuming it, and keeps the lines that carry
the test's own tag (the forwarder prints "l2fwd[<tag>]", the tag set per test in its
trace_tag map). `python -m lab trace` follows the same file (`follow`), never trace_pipe:
two readers never split each other's lines, and a pytest session's report keeps its own.
"""
from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Iterator

TRACEFS = "/sys/kernel/tracing"
_seq = itertools.count(1)


def new_tag(name: str) -> int:
    """A tag unlikely to be shared by any other test running on the machine now."""
    return zlib.crc32(f"{os.getpid()}/{next(_seq)}/{name}".encode()) or 1


def tagged_lines(tag: int, prefix: str = "l2fwd") -> list[str]:
    """The lines of the trace buffer that carry `prefix[tag]`, oldest first."""
    marker = f"{prefix}[{tag}] "
    try:
        with open(os.path.join(TRACEFS, "trace"), errors="replace") as f:
            return [line.rstrip("\n") for line in f if marker in line]
    except FileNotFoundError:
        return []


def _stamp(line: str) -> float | None:
    """The timestamp of a trace line ("  task-1  [001] ..s2.  5282.557692: ..."), if any."""
    head = line.split(": ", 1)[0].rsplit(None, 1)
    try:
        return float(head[-1]) if head else None
    except ValueError:
        return None


def follow(marker: str, poll: float = 0.2) -> Iterator[str]:
    """Yield the lines carrying `marker` that appear in the trace buffer from now on, read
    without consuming (the `trace` file, re-read every `poll` seconds; a line is new when its
    timestamp is later than the last one seen)."""
    import time
    path = os.path.join(TRACEFS, "trace")
    with open(path, errors="replace") as f:
        last = max((t for line in f if (t := _stamp(line)) is not None), default=0.0)
    while True:
        newest = last
        with open(path, errors="replace") as f:
            for line in f:
                t = _stamp(line)
                if t is None or t <= last:
                    continue
                newest = max(newest, t)
                if marker in line:
                    yield line.rstrip("\n")
        last = newest
        yield ""            # a tick: the caller may stop here
        time.sleep(poll)
