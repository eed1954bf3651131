"""What the lab must leave alone: the root namespace's links, addresses, routes and sysctls,
what is pinned in bpffs, and the kernel's taint (a WARNING a scenario provoked taints it).

`snapshot()` reads them (over netlink and /proc/sys/net, from the root namespace);
`differences()` says what changed between two snapshots. The pytest plugin takes one at
the start of the session and compares at the end.
"""
from __future__ import annotations

import os
from typing import Any

SYSCTL_ROOT = "/proc/sys/net"
BPFFS = "/sys/fs/bpf"
VOLATILE = ("nf_conntrack_count", "base_reachable_time", "flush", "stable_secret")
TAINTED = "/proc/sys/kernel/tainted"
# bit i -> letter, as the kernel prints them (Documentation/admin-guide/tainted-kernels.rst)
TAINT_FLAGS = "PFSRMBUDAWCIOELKXTN"
TAINT_WHY = {"W": "a kernel WARNING: see dmesg", "D": "a kernel oops: see dmesg", "L": "a soft lockup: see dmesg"}


Snapshot = dict[str, Any]
"""snapshot(): links, addresses, routes, sysctls, bpffs and taint, each kind in its own shape."""


def _tainted() -> int:
    try:
        with open(TAINTED) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def taint_letters(flags: int) -> str:
    return "".join(TAINT_FLAGS[i] if i < len(TAINT_FLAGS) else f"[{i}]" for i in range(flags.bit_length())
                   if flags >> i & 1)


def _sysctls() -> dict[str, str]:
    """Every readable sysctl under /proc/sys/net: ~840 files, read with os.scandir/os.read
    (a third of the time os.walk and open() take)."""
    out = {}
    stack = [SYSCTL_ROOT]
    while stack:
        for entry in os.scandir(stack.pop()):
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
                continue
            if entry.name in VOLATILE:
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY)
            except OSError:
                continue        # write-only or not readable
            try:
                out[entry.path[len("/proc/sys/"):]] = os.read(fd, 4096).decode().strip()
            except OSError:
                continue
            finally:
                os.close(fd)
    return out


def snapshot() -> Snapshot:
    from .netns import iproute_class
    with iproute_class()() as ipr:
        links = {link.get("IFLA_IFNAME"): (link["flags"], link.get("IFLA_MTU"), link.get("IFLA_ADDRESS"),
                                           link.get("IFLA_MASTER"), str(link.get("IFLA_XDP")))
                 for link in ipr.get_links()}
        addrs = sorted((a["index"], a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr())
        routes = sorted((r["family"], r.get("RTA_TABLE"), str(r.get("RTA_DST")), r["dst_len"], str(r.get("RTA_OIF")),
                         str(r.get("RTA_GATEWAY"))) for r in ipr.route("dump"))
    return {"links": links, "addresses": addrs, "routes": routes, "sysctls": _sysctls(), "bpffs": _bpffs(),
            "tainted": _tainted()}


def _bpffs() -> dict[str, str]:
    """Everything pinned under /sys/fs/bpf (name -> "pinned"), as far as it can be listed,
    but the lab's pin folders whose owner is alive (another session's process, a lab that is
    up): they come and go with their owners, and the sweep removes those of dead ones. Other
    sandboxes' pin roots are their sessions' business (see netns.sandbox)."""
    from . import sweep, uplab
    from .netns import STATE_BASE, sandbox

    def live(root: str, labs_up: list[str]) -> set[str]:
        here = {os.path.join(root, d) for d in (os.listdir(root) if os.path.isdir(root) else [])}
        return here - set(sweep.stale_pin_dirs(labs_up, root))
    skip = live(sweep.pin_root(), uplab.running())
    if sandbox():       # the unsandboxed sessions' live folders too, with the labs up outside any sandbox
        skip |= live(sweep.PIN_BASE, uplab.running(f"{STATE_BASE}/up"))
    skip |= {d for d in (os.path.join(sweep.PIN_BASE, n) for n in (os.listdir(sweep.PIN_BASE) if
             os.path.isdir(sweep.PIN_BASE) else []) if n.startswith(sweep.SANDBOX_PINS)) if d != sweep.pin_root()}
    out = {}
    for dirpath, _dirs, files in os.walk(BPFFS):
        if any(dirpath == d or dirpath.startswith(d + "/") for d in skip):
            continue
        for name in files:
            out[os.path.join(dirpath, name)[len(BPFFS) + 1:]] = "pinned"
    return out


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    out = []
    for kind in ("links", "sysctls", "bpffs"):
        a, b = before.get(kind, {}), after.get(kind, {})
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                what = "pinned object" if kind == "bpffs" else kind[:-1]
                out.append(f"{what} {k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}")
    new_taint = after.get("tainted", 0) & ~before.get("tainted", 0)
    if new_taint:
        out.append(f"kernel taint: {taint_letters(before.get('tainted', 0)) or 'none'} -> "
                   f"{taint_letters(after.get('tainted', 0))} (" + "; ".join(
                       f"{c}: {TAINT_WHY.get(c, 'see the kernel tainted-kernels documentation')}"
                       for c in taint_letters(new_taint)) + ")")
    for kind in ("addresses", "routes"):
        gone, new = set(before[kind]) - set(after[kind]), set(after[kind]) - set(before[kind])
        out += [f"{kind[:-1]} removed: {x}" for x in sorted(gone, key=str)]
        out += [f"{kind[:-1]} added: {x}" for x in sorted(new, key=str)]
    return out
