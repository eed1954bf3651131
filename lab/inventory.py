"""What a lab's namespaces hold, read raw, and how two readings differ: the check that a
reused lab is exactly as it was built (`Lab.reset`).

A reading (`Inventory.of(lab)`) covers, in each namespace of the lab:

    links        name, ifindex, MTU, MAC, flags (up, noarp, promisc...), tx queue length,
                 tx/rx queues, kind, master, the XDP program attached and its mode
    addresses    every address and its prefix
    routes       every route of every table (the kernel's own local and broadcast ones too)
    rules        the policy routing rules
    neighbours   the permanent entries (the lab's static ones, and any a test added);
                 entries the stack learnt from traffic are a cache: `Lab.reset` flushes them
    qdiscs       every qdisc (a clsact left behind keeps its filters)
    offloads     each interface's requested and active features (`ethtool -k`)
    queues       what sysfs says of each interface's GRO timer, NAPI threads, RPS and XPS
    sysctls      which /proc/sys files were written from inside the namespace,
                 counted by bpf/sysctl_writes.bpf.o, a cgroup/sysctl program on this process's
                 cgroup (reading the ~800 files of a namespace costs 12-15 ms; the program
                 costs nothing until a sysctl is accessed): writes by processes of another
                 cgroup (a shell of yours) are not seen

and the pins in the bpffs of the programs attached in the lab and of their maps (outside the
lab's own pin directories, where each process keeps the objects it loaded for its session):
any other pin is the host's, which the session's host check covers.

Links, addresses, routes, rules, neighbours and qdiscs are one raw rtnetlink dump each
(lab/rtnl.py). `differences(lab, before, now)` names each change as a person would say it:
"fwd: route unicast 10.9.0.0/24 dev veth2 table main: added (proto static, scope global)",
"net2: link veth3: mtu 1500 -> 9000", "net1: offloads of veth1: rx-gro on".
"""
from __future__ import annotations

import ctypes
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import BPF_DIR, bpfsys, rtnl
from .errors import LabError
from .once import OnePerProcess
from .xdp import ATTACHED_MODES

if TYPE_CHECKING:
    from .built import Lab
    from .netns import Netns

OBJECT = BPF_DIR / "sysctl_writes.bpf.o"
BPFFS = "/sys/fs/bpf"
_WRITE_KEY = struct.Struct("<I128s")        # struct write_key in bpf/sysctl_writes.bpf.c
FLAGS = {0x1: "up", 0x80: "noarp", 0x100: "promisc", 0x200: "allmulti", 0x1000: "multicast", 0x4: "debug"}
ROUTE_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast", 6: "blackhole",
               7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
TABLES = {253: "default", 254: "main", 255: "local"}
PROTOCOLS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static"}    # RTPROT_*
RULE_FAMILIES = {2: "inet", 10: "inet6", 128: "ipmr", 129: "ip6mr"}
SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}    # RT_SCOPE_*
QUEUE_FILES = ("gro_flush_timeout", "napi_defer_hard_irqs", "threaded")


class InventoryError(LabError):
    """The lab cannot read what its namespaces hold (and so cannot be reused)."""


def own_cgroup() -> str:
    """The cgroup v2 directory of this process (where it is mounted: /sys/fs/cgroup, or
    /sys/fs/cgroup/unified on a hybrid systemd machine)."""
    with open("/proc/self/cgroup") as f:
        path = next((line.strip()[3:] for line in f if line.startswith("0::")), None)
    with open("/proc/self/mountinfo") as f:
        mount = next((line.split()[4] for line in f if " - cgroup2 " in line), None)
    if path is None or mount is None:
        raise InventoryError("find this process's cgroup", "no cgroup v2 hierarchy is mounted",
                             "mount one: mount -t cgroup2 none /sys/fs/cgroup/unified")
    return os.path.join(mount, path.lstrip("/"))


class SysctlWatch:
    """bpf/sysctl_writes.bpf.o loaded and attached to this process's cgroup: writes to
    /proc/sys files counted per watched network namespace. One per process; `close()`
    detaches it."""

    def __init__(self, path: Path = OBJECT) -> None:
        from .elf import libbpf, open_object, strerror
        lib = self._lib = libbpf()
        self._link: int | None = None
        obj, log = open_object(path, InventoryError)
        self._obj: int | None = obj
        try:
            with log:
                err = -lib.bpf_object__load(obj)
            if err:
                raise InventoryError(f"load {path.name}", f"{strerror(err)}:\n{log.text.strip()[-2000:]}",
                                     "the lab needs CAP_BPF and CAP_PERFMON (root) and kprobes")
            prog = lib.bpf_object__find_program_by_name(obj, b"sysctl_write")
            cgroup = own_cgroup()
            fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                with log:
                    link = lib.bpf_program__attach_cgroup(prog, fd)
            finally:
                os.close(fd)
            if not link:
                raise InventoryError(f"attach {path.name} to cgroup {cgroup}", f"{strerror(ctypes.get_errno())}: "
                                     f"{log.text.strip()[-500:]}", "the kernel needs CONFIG_CGROUP_BPF (5.2+)")
            self._link = link
            self.watched_fd = lib.bpf_object__find_map_fd_by_name(obj, b"watched")
            self.writes_fd = lib.bpf_object__find_map_fd_by_name(obj, b"writes")
        except BaseException:
            self.close()
            raise

    def watch(self, netns: int) -> None:
        bpfsys.update(self.watched_fd, struct.pack("<I", netns), b"\1")

    def unwatch(self, netns: int) -> None:
        """Stop counting writes in `netns` and forget those counted."""
        if self._obj is None:
            return
        bpfsys.delete(self.watched_fd, struct.pack("<I", netns))
        for key in bpfsys.keys(self.writes_fd, _WRITE_KEY.size):
            if _WRITE_KEY.unpack(key)[0] == netns:
                bpfsys.delete(self.writes_fd, key)

    def writes(self) -> dict[int, dict[str, int]]:
        """netns inode -> {"net.ipv4.ip_forward": times written} for every watched namespace."""
        out: dict[int, dict[str, int]] = {}
        for key in bpfsys.keys(self.writes_fd, _WRITE_KEY.size):
            raw = bpfsys.lookup(self.writes_fd, key, 8)
            if raw is None:
                continue
            netns, name = _WRITE_KEY.unpack(key)
            out.setdefault(netns, {})[name.split(b"\0")[0].decode(errors="replace").replace("/", ".")] = \
                struct.unpack("<Q", raw)[0]
        return out

    def close(self) -> None:
        if self._link is not None:
            self._lib.bpf_link__destroy(self._link)
            self._link = None
        if self._obj is not None:
            self._lib.bpf_object__close(self._obj)
            self._obj = None


_watch = OnePerProcess(lambda: SysctlWatch(), InventoryError)


def sysctl_watch() -> SysctlWatch:
    """This process's sysctl watch, loaded on first use; raises InventoryError (the same one
    every time) when writes cannot be watched here."""
    return _watch.get()


def close() -> None:
    """Detach and unload this process's sysctl watch (end of a session)."""
    _watch.close()


def netns_inode(ns: "Netns") -> int:
    return os.fstat(ns.fd).st_ino


# reading ---------------------------------------------------------------------------------------
Key = tuple[str, str, str]          # (namespace, kind, which one)


@dataclass
class Inventory:
    """One reading of what a lab's namespaces hold (see the module's docstring)."""
    objects: dict[Key, dict[str, str]] = field(default_factory=dict)
    sysctls: dict[str, dict[str, int]] = field(default_factory=dict)    # namespace -> file -> writes
    pins: frozenset[str] = frozenset()

    @classmethod
    def of(cls, lab: "Lab") -> "Inventory":
        inv = cls()
        counted = sysctl_watch().writes()
        for short, ns in lab.namespaces.items():
            _read_namespace(ns, short, inv.objects)
            inv.sysctls[short] = counted.get(netns_inode(ns), {})
        inv.pins = frozenset(pinned(lab.objects))
        return inv


def _ip(family: int, raw: bytes | None) -> str:
    if not raw:
        return "default" if family in (socket.AF_INET, socket.AF_INET6) else "-"
    if len(raw) in (4, 16):
        return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
    return raw.hex()


def _u32(raw: bytes | None, default: int = 0) -> int:
    return struct.unpack("=I", raw)[0] if raw is not None and len(raw) == 4 else default


def _read_namespace(ns: "Netns", short: str, out: dict[Key, dict[str, str]]) -> None:
    names: dict[int, str] = {}
    for (_family, _type, index, flags, _change), a in rtnl.dump(ns, rtnl.RTM_GETLINK, rtnl.IFINFOMSG):
        name = a.get(rtnl.IFLA_IFNAME, b"?").rstrip(b"\0").decode()
        names[index] = name
        info = rtnl.attributes(a[rtnl.IFLA_LINKINFO], 0, len(a[rtnl.IFLA_LINKINFO])) if rtnl.IFLA_LINKINFO in a else {}
        mode, prog_id = rtnl.xdp_of(a)
        out[(short, "link", name)] = {
            "ifindex": str(index), "kind": info.get(rtnl.IFLA_INFO_KIND, b"").rstrip(b"\0").decode() or "-",
            "mtu": str(_u32(a.get(rtnl.IFLA_MTU))), "mac": ":".join(f"{b:02x}" for b in a.get(rtnl.IFLA_ADDRESS, b"")),
            "flags": ",".join(v for k, v in FLAGS.items() if flags & k) or "-",
            "txqlen": str(_u32(a.get(rtnl.IFLA_TXQLEN))),
            "queues": f"{_u32(a.get(rtnl.IFLA_NUM_TX_QUEUES), 1)} tx, {_u32(a.get(rtnl.IFLA_NUM_RX_QUEUES), 1)} rx",
            "master": str(_u32(a.get(rtnl.IFLA_MASTER))),
            "xdp": f"{ATTACHED_MODES.get(mode, mode)} program {prog_id}" if mode else "none"}
    for (family, plen, _flags, scope, index), a in rtnl.dump(ns, rtnl.RTM_GETADDR, rtnl.IFADDRMSG):
        ip = _ip(family, a.get(2) or a.get(1))                    # IFA_LOCAL, else IFA_ADDRESS
        out[(short, "address", f"{ip}/{plen} dev {names.get(index, index)}")] = {"scope": SCOPES.get(scope, str(scope))}
    for (family, dlen, slen, tos, table, proto, scope, rtype, _f), a in rtnl.dump(ns, rtnl.RTM_GETROUTE, rtnl.RTMSG):
        table = _u32(a.get(15), table)                             # RTA_TABLE
        oif = _u32(a.get(4))                                       # RTA_OIF
        which = (f"{ROUTE_TYPES.get(rtype, rtype)} {_ip(family, a.get(1))}/{dlen}"
                 + (f" from {_ip(family, a.get(2))}/{slen}" if slen else "") + (f" tos {tos}" if tos else "")
                 + (f" dev {names.get(oif, oif)}" if oif else "") + f" table {TABLES.get(table, table)}"
                 + (f" metric {_u32(a.get(6))}" if 6 in a else ""))
        out[(short, "route", which)] = {"via": _ip(family, a.get(5)) if 5 in a else "-",
                                        "proto": PROTOCOLS.get(proto, str(proto)),
                                        "scope": SCOPES.get(scope, str(scope)),
                                        "src": _ip(family, a.get(7)) if 7 in a else "-",
                                        "more": a[9].hex() if 9 in a else "-"}     # RTA_MULTIPATH
    for (family, dlen, slen, tos, table, _r1, _r2, action, flags), a in rtnl.dump(ns, rtnl.RTM_GETRULE, rtnl.RTMSG):
        named = {1, 2, 3, 6, 10, 14, 15, 17, 21}    # FRA_DST, SRC, IIFNAME, PRIORITY, FWMARK, SUPPRESS_PREFIXLEN,
        which = " ".join(filter(None, (                 # TABLE, OIFNAME, PROTOCOL
            RULE_FAMILIES.get(family, str(family)), f"pref {_u32(a.get(6))}",
            f"from {_ip(family, a.get(2))}/{slen}" if slen else "",
            f"to {_ip(family, a.get(1))}/{dlen}" if dlen else "",
            f"tos {tos}" if tos else "", f"iif {a[3].rstrip(bytes(1)).decode()}" if 3 in a else "",
            f"oif {a[17].rstrip(bytes(1)).decode()}" if 17 in a else "",
            f"fwmark {_u32(a.get(10)):#x}" if 10 in a else "",
            f"lookup {TABLES.get(_u32(a.get(15), table), _u32(a.get(15), table))}",
            f"action {action}" if action != 1 else "", f"flags {flags:#x}" if flags else "",
            f"suppress_prefixlength {_u32(a[14])}" if _u32(a.get(14), 0xffffffff) != 0xffffffff else "",
            *(f"attribute {k} {v.hex()}" for k, v in sorted(a.items()) if k not in named))))
        out[(short, "rule", which)] = {}
    for (family, index, state, _flags, _type), a in rtnl.dump(ns, rtnl.RTM_GETNEIGH, rtnl.NDMSG):
        if state & rtnl.NUD_PERMANENT:
            mac = ":".join(f"{b:02x}" for b in a.get(rtnl.NDA_LLADDR, b""))
            out[(short, "neighbour", f"{_ip(family, a.get(rtnl.NDA_DST))} dev {names.get(index, index)}")] = {
                "lladdr": mac or "-"}
    for q in rtnl.qdiscs(ns):
        out[(short, "qdisc", f"{q.kind} dev {names.get(q.ifindex, q.ifindex)} handle {q.handle >> 16:x}: "
                             f"parent {q.parent:x}")] = {}
    from .ethtool import feature_bits
    sock = ns.kept_socket(socket.AF_INET, socket.SOCK_DGRAM)
    for index, name in names.items():
        if name == "lo":
            continue
        try:
            requested, active = feature_bits(sock, name)
        except OSError:
            continue
        out[(short, "offloads", name)] = {"requested": hex(requested), "active": hex(active)}
    for index, name in names.items():
        if name != "lo":
            _read_queues(ns, short, name, out)


def _read_queues(ns: "Netns", short: str, name: str, out: dict[Key, dict[str, str]]) -> None:
    base = os.path.join(ns.sysfs, "class/net", name)
    found: dict[str, str] = {}
    for f in QUEUE_FILES:
        found[f] = _read(os.path.join(base, f))
    try:
        queues = sorted(os.listdir(os.path.join(base, "queues")))
    except OSError:
        queues = []
    for q in queues:
        what = "rps_cpus" if q.startswith("rx-") else "xps_cpus"
        found[f"{q}/{what}"] = _read(os.path.join(base, "queues", q, what))
    out[(short, "queues", name)] = found


def _read(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return "-"
    try:
        return os.read(fd, 4096).decode().strip()
    except OSError:
        return "-"
    finally:
        os.close(fd)


def pinned(objects: set[tuple[str, int]]) -> list[str]:
    """The pins in the bpffs of `objects` (("map", id), ("prog", id)), outside the lab's own
    pin directories."""
    from . import bpfsys
    from .sweep import PIN_BASE
    found: list[str] = []
    if not objects:
        return found
    for root, dirs, files in os.walk(BPFFS):
        dirs[:] = [d for d in dirs if os.path.join(root, d) != PIN_BASE]
        for name in files:
            path = os.path.join(root, name)
            try:
                fd = bpfsys.obj_get(path)
            except OSError:
                continue            # not an object (bpffs's own iterators), or gone meanwhile
            try:
                if bpfsys.object_of(fd) in objects:
                    found.append(path)
            finally:
                os.close(fd)
    return found


def flush_learnt_neighbours(lab: "Lab") -> int:
    """Delete every neighbour entry of the lab that is not permanent (what the stack learnt
    from traffic: reachable, stale, failed, incomplete ones still resolving, noarp ones for
    broadcast addresses); returns how many."""
    flushed = 0
    for ns in lab.namespaces.values():
        learnt = [(family, index, a[rtnl.NDA_DST])
                  for (family, index, state, _f, _t), a in rtnl.dump(ns, rtnl.RTM_GETNEIGH, rtnl.NDMSG)
                  if not state & rtnl.NUD_PERMANENT and rtnl.NDA_DST in a]
        for family, index, dst in learnt:
            try:
                rtnl.delete_neighbour(ns, family, index, dst)
                flushed += 1
            except OSError:
                pass            # gone by itself meanwhile
    return flushed


# comparing -------------------------------------------------------------------------------------
def differences(lab: "Lab", before: Inventory, now: Inventory) -> list[str]:
    """Each way `now` differs from `before`, one line each, as a person would say it."""
    out = []
    for key in sorted(before.objects.keys() | now.objects.keys()):
        short, kind, which = key
        was, is_ = before.objects.get(key), now.objects.get(key)
        if was == is_:
            continue
        if was is None:
            out.append(f"{short}: {kind} {which}: added" + (f" ({_fields(is_)})" if is_ else ""))
        elif is_ is None:
            out.append(f"{short}: {kind} {which}: removed")
        elif kind == "offloads":
            out.append(f"{short}: offloads of {which}: {_features(lab, short, which, was, is_)}")
        else:
            changed = ", ".join(f"{k} {was.get(k, '-')} -> {is_.get(k, '-')}" for k in sorted(was.keys() | is_.keys())
                                if was.get(k) != is_.get(k))
            out.append(f"{short}: {kind} {which}: {changed}")
    for short, files in now.sysctls.items():
        for name, n in sorted(files.items()):
            # counted per attempt, not per write: a handler that cannot take RTNL restarts the
            # syscall (devinet_sysctl_forward: restart_syscall()), and each attempt runs the hook
            if n > before.sysctls.get(short, {}).get(name, 0):
                out.append(f"{short}: sysctl {name}: written")
    out += [f"pinned object {p}: added" for p in sorted(now.pins - before.pins)]
    out += [f"pinned object {p}: removed" for p in sorted(before.pins - now.pins)]
    return out


def _fields(values: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items() if v != "-")


def _features(lab: "Lab", short: str, name: str, was: dict[str, str], is_: dict[str, str]) -> str:
    from .ethtool import feature_names
    changed = int(was["requested"], 16) ^ int(is_["requested"], 16) | int(was["active"], 16) ^ int(is_["active"], 16)
    now = int(is_["active"], 16)
    sock = lab.ns(short).socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        named = feature_names(sock, name, changed)
    except OSError:
        return f"requested {was['requested']} -> {is_['requested']}, active {was['active']} -> {is_['active']}"
    finally:
        sock.close()
    bits = [i for i in range(changed.bit_length()) if changed >> i & 1]
    return ", ".join(f"{n} {'on' if now >> i & 1 else 'off'}" for n, i in zip(named, bits))


def watch(lab: "Lab", namespaces: Iterable["Netns"]) -> None:
    """Count sysctl writes in `namespaces` until the lab closes."""
    w = sysctl_watch()
    inodes = [netns_inode(ns) for ns in namespaces]
    for i in inodes:
        w.watch(i)

    def unwatch() -> None:
        for i in inodes:
            w.unwatch(i)
    lab.on_close("stop counting sysctl writes", unwatch)
