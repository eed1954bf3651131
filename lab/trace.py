"""bpf_printk lines of one test, from the kernel's trace buffer.

bpf_printk writes to the top-level trace buffer. Reading trace_pipe consumes it, so two
readers (two xdist workers) would split each other's lines; the lab reads the `trace` file
instead, which shows the same buffer without consuming it, and keeps the lines that carry
the test's own tag (the forwarder prints "l2fwd[<tag>]", the tag set per test in its
trace_tag map). `python -m lab trace` is the live reader of trace_pipe, for people.
"""
from __future__ import annotations

import itertools
import os
import zlib

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
