"""A built lab: `build()` makes a `Topology` real, and the `Lab` it returns owns every object
it made and removes them in reverse order (captures, ports, programs' attachments, then
the namespaces, which take their veths).

`build()` creates every object over netlink (no `ip` processes), each veth end directly in
its own namespace. The lab also keeps the programs attached in it (loaded by the lab or
adopted from another loader) for preflight checks, counters and the failure report, and
runs commands inside its namespaces (`run`, `spawn`) for control planes of your own.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .errors import LabError, LinkError, TopologyError
from .names import NameFactory, default_factory
from .netns import Netns
from .topology import Topology, Veth

if TYPE_CHECKING:
    from .counters import Snapshot
    from .dataplane import Capture, Port
    from .fates import Fates, Recorder, Send
    from .inventory import Inventory
    from .maps import MapView
    from .programs import Adopted
    from .settle import Quiet


class LabProgram(Protocol):
    """What the lab needs of a program attached in it (loaded by the lab or adopted)."""
    @property
    def maps(self) -> "Mapping[str, MapView]": ...
    @property
    def name(self) -> str: ...

    def placements(self) -> list[tuple["Interface", str, int]]: ...
    def dump(self) -> str: ...
    def run_stats(self) -> tuple[int, int]: ...


@dataclass
class Interface:
    """A built interface: where it is and what the kernel gave it."""
    lab: "Lab"
    ns: Netns
    nsname: str        # the topology's short name ("fwd")
    name: str
    ifindex: int
    mac: str
    ip: str | None     # address without prefix

    @property
    def key(self) -> str:
        return f"{self.nsname}/{self.name}"

    def __repr__(self) -> str:
        return f"Interface({self.key}, ifindex={self.ifindex}, mac={self.mac})"

    def __str__(self) -> str:
        return self.key


@dataclass
class Lab:
    """Everything one `build()` made. `close()` undoes it in reverse order (idempotent)."""
    topology: Topology
    namespaces: dict[str, Netns] = field(default_factory=dict)
    interfaces: dict[str, Interface] = field(default_factory=dict)
    _undo: list[tuple[str, Callable[[], None], bool]] = field(default_factory=list)
    checks: list[Callable[[], None]] = field(default_factory=list)
    """Run before every send (preflight): each raises when traffic would be pointless."""
    captures: list["Capture"] = field(default_factory=list)
    programs: list[LabProgram] = field(default_factory=list)
    """Every program attached in the lab, loaded by it or adopted, in order of attachment."""
    _stats_fd: int | None = None
    snapshots: list["Snapshot"] = field(default_factory=list)
    sends: list["Send"] = field(default_factory=list)
    """Every send of the lab's ports, in order (to tell its dropped frames apart)."""
    fate_marks: list["Fates"] = field(default_factory=list)
    _recorder: "Recorder | None" = None     # this process's fates recorder, while it watches the lab
    focus: list[str] = field(default_factory=list)
    """Interfaces a person asked to look at (lab.existing); empty: all of them."""
    fates_problem: str | None = None
    """Why the kernel's frame events are not recorded for this lab (None: they are)."""
    senders: list[tuple[str, "subprocess.Popen[str]"]] = field(default_factory=list)
    """Processes lab.spawn started that may send frames (lab.settle cannot see them)."""
    userspace: str | None = None
    """A user-space process that forwards the lab's frames (an AF_XDP forwarder: "my xsk fwd"),
    unseen by lab.settle(): checks that nothing (more) arrived then wait their whole bound."""
    _kept_at: int | None = None     # undo steps that built the lab (Lab.keep): reset() stops there
    baseline: "Inventory | None" = None
    """What the lab's namespaces held when it was kept (Lab.keep), for reset() to compare."""
    objects: set[tuple[str, int]] = field(default_factory=set)
    """("prog", id) and ("map", id) of every program attached in the lab since it was built,
    and of its maps: a pin of one of them is the lab's (lab.inventory)."""
    _spares: dict[tuple[str, str], list["socket.socket"]] = field(default_factory=dict)
    """("port" or "capture", interface key) -> sockets a kept lab keeps between tests."""
    checked_ms: float = 0.0
    """How long the last reset() took beyond what closing the lab would also do (undoing the
    test's steps, forgetting its fates): the reading, the comparison, the wait for the
    kernel, the flush. The price of reuse."""

    def ns(self, name: str) -> Netns:
        try:
            return self.namespaces[name]
        except KeyError:
            raise TopologyError(f"find namespace {name}", f"lab {self.topology.name!r} has no such namespace",
                                f"use one of {', '.join(self.namespaces)}") from None

    def iface(self, key: str) -> Interface:
        """The interface "ns/name", e.g. lab.iface("fwd/veth0")."""
        try:
            return self.interfaces[key]
        except KeyError:
            self.topology.end(key)  # raises with the list of names
            raise

    def peer(self, key: str) -> Interface:
        return self.iface(self.topology.peer(key).key)

    def port(self, key: str) -> "Port":
        """A sender on interface `key`, closed with the lab (kept for the next test of a kept lab)."""
        from .dataplane import Port
        p = Port(self.iface(key), self._spare_socket("port", key))
        self._close_or_keep("port", key, p.sock)
        return p

    def capture(self, key: str, rcvbuf: int = 32 << 20) -> "Capture":
        """A capture of what interface `key` receives from now on, closed with the lab
        (parked for the next test of a kept lab; `rcvbuf`: its socket's receive buffer, bytes)."""
        from .dataplane import Capture
        c = Capture(self.iface(key), rcvbuf, self._spare_socket("capture", key))
        self._close_or_keep("capture", key, c.sock)
        self.captures.append(c)
        return c

    def _spare_socket(self, kind: str, key: str) -> "socket.socket | None":
        spare = self._spares.get((kind, key))
        return spare.pop() if spare else None

    def _close_or_keep(self, kind: str, key: str, sock: "socket.socket") -> None:
        """When the test ends: a kept lab keeps the socket for the next test (a capture
        parked: dataplane.park), any other lab closes it. Closing an AF_PACKET socket waits for
        an RCU grace period (~13 ms here), once per test without this."""
        if self._kept_at is None:
            self.on_close(f"close {kind} on {key}", sock.close, together=True)
            return

        def keep() -> None:
            if sock.fileno() == -1:         # the test closed it itself
                return
            if kind == "capture":
                from .dataplane import park
                park(sock)
            self._spares.setdefault((kind, key), []).append(sock)
        self.on_close(f"keep the {kind} socket of {key} for the next test", keep)

    def _close_spares(self) -> None:
        """Close the sockets kept for later tests, all at once (one RCU grace period)."""
        socks = [s for kept in self._spares.values() for s in kept]
        self._spares.clear()
        threads = [threading.Thread(target=s.close, name="xdplab: close a kept socket") for s in socks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def snapshot(self) -> "Snapshot":
        """Counters of every interface of the lab, now."""
        from .counters import Snapshot
        snap = Snapshot.of(self)
        self.snapshots.append(snap)
        if self.fates_problem is None and not self.fate_marks:
            self.fate_marks.append(self.fates())     # the report's fates start where its counters do
        return snap

    def fates(self) -> "Fates":
        """What the kernel reported about frames on the lab's devices since it was built:
        XDP exceptions, redirects and their errors, transmits, skb drops (lab.fates)."""
        from . import fates
        if self.fates_problem is not None:
            raise fates.FatesError(f"read the fates of lab {self.topology.name}", self.fates_problem,
                                   "the scenario's counters still tell what moved")
        return fates.read(self)

    def record_send(self, where: str, raw: bytes, count: int, started: int) -> None:
        """Port.send's record of what it sent (`started`: time.monotonic_ns() before it)."""
        from .fates import Send
        self.sends.append(Send(len(self.sends) + 1, where, raw, count, started))

    # programs ----------------------------------------------------------------------------
    def register(self, program: LabProgram) -> None:
        """Take note of a program attached in the lab (XdpProgram.attach and adopt call this):
        its maps learn the lab's addresses, and the kernel starts counting program runs."""
        if any(p is program for p in self.programs):
            return
        self.programs.append(program)
        self.objects.update(("map", m.info.id) for m in program.maps.values())
        self.objects.update(("prog", prog_id) for _, _, prog_id in program.placements())
        addresses = self.addresses()
        for m in program.maps.values():
            m.addresses = addresses
        if self._stats_fd is None:
            from .bpfsys import enable_run_stats
            try:
                self._stats_fd = enable_run_stats()
            except OSError:
                self._stats_fd = -1          # an old kernel: run counts stay 0
            else:
                fd = self._stats_fd
                self.on_close("stop counting program runs", lambda: os.close(fd))
        self.on_close(f"forget program {program.name}", lambda: self.programs.remove(program))
        if self._recorder is not None:      # cpumap events name their map, not a device
            from .fates import CPUMAP
            ids = [m.info.id for m in program.maps.values() if m.info.type == CPUMAP]
            if ids:
                rec = self._recorder
                rec.watch_maps(ids)
                self.on_close(f"stop recording the cpumaps of {program.name}", lambda: rec.unwatch_maps(ids))

    def adopt(self, key: str) -> "Adopted":
        """The XDP program another loader attached to interface `key`, with its maps typed
        from BTF, in the preflight and the failure report like the lab's own. Detaching stays
        with its owner; the lab only lets go of its handles when it closes."""
        from .programs import Adopted
        adopted = Adopted(self.iface(key))
        self.on_close(f"let go of {adopted.name}", adopted.close)
        self.register(adopted)
        return adopted

    def addresses(self) -> dict[bytes, str]:
        """Every IPv4 address of the lab (4 bytes, network order) -> "192.168.0.1 (net2/veth3)"."""
        return {ipaddress.IPv4Address(i.ip).packed: f"{i.ip} ({key})"
                for key, i in self.interfaces.items() if i.ip}

    # commands in namespaces ----------------------------------------------------------------
    def _argv(self, ns: str, argv: list[str]) -> list[str]:
        if not isinstance(argv, (list, tuple)) or not argv or not all(isinstance(a, str) for a in argv):
            raise LabError(f"run a command in namespace {ns}", f"{argv!r} is not a list of strings",
                           'give the command as a list: ["ip", "link"] (no shell)')
        return ["ip", "netns", "exec", self.ns(ns).name, *argv]

    def run(self, ns: str, argv: list[str], *, check: bool = True, timeout: float = 60.0,
            env: dict[str, str] | None = None) -> "subprocess.CompletedProcess[str]":
        """Run `argv` inside namespace `ns` (as `ip netns exec` does: that namespace's /sys too)
        and wait for it; with `check`, a non-zero exit raises with its output."""
        cmd = self._argv(ns, argv)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, **(env or {})})
        except FileNotFoundError as e:
            raise LabError(f"run {argv[0]} in namespace {ns}", str(e), "install it, or give its full path") from None
        except subprocess.TimeoutExpired:
            raise LabError(f"run {' '.join(argv)} in namespace {ns}", f"still running after {timeout} s",
                           "use lab.spawn() for a daemon, or raise timeout") from None
        if check and done.returncode != 0:
            raise LabError(f"run {' '.join(argv)} in namespace {ns}",
                           f"exit status {done.returncode}:\n{(done.stderr or done.stdout).strip()}",
                           "see the command's own message above")
        return done

    def spawn(self, ns: str, argv: list[str], sends_frames: bool = True) -> "subprocess.Popen[str]":
        """Start `argv` inside namespace `ns` and leave it running (a control plane daemon);
        it is terminated (then killed) when the lab closes, before the namespaces go. While it
        runs, the lab's checks that nothing (more) arrived wait their whole bound (the kernel's
        quiet says nothing about what a process will send) unless `sends_frames=False`."""
        proc = subprocess.Popen(self._argv(ns, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if sends_frames:
            self.senders.append((f"{argv[0]} in {ns}", proc))

        def stop() -> None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        self.on_close(f"stop {argv[0]} in {ns}", stop)
        return proc

    def settle(self, bound: float = 1.0) -> "Quiet":
        """Wait until the kernel has finished with every frame sent so far (lab.settle): no
        clock, unless it stays busy past `bound` seconds (x pace.slowdown()); says which."""
        from .pace import Bound
        from .settle import wait_quiet
        return wait_quiet([self], Bound(bound))

    def before_traffic(self) -> None:
        """Run the preflight checks (Port.send calls this), over one reading of the maps."""
        from .maps import one_reading
        with one_reading():
            for check in self.checks:
                check()

    def on_close(self, what: str, fn: Callable[[], None], together: bool = False) -> None:
        """Register an undo step; steps run in reverse order of registration. Steps marked
        `together` that follow one another run at the same time: closing a packet or AF_XDP
        socket waits for an RCU grace period in the kernel (synchronize_net in
        packet_release: ~10 ms here), and three of them one after another wait three."""
        self._undo.append((what, fn, together))

    def close(self) -> None:
        """Undo everything, last made first. Goes on after a failed step and raises the
        first failure at the end, so one stuck object never leaks the others."""
        errors, first = self._undo_to(0)
        if first:
            raise LabError(f"tear down lab {self.topology.name}", "; ".join(errors),
                           "run `python -m lab clean` to remove what is left") from first[0]

    def _undo_to(self, mark: int) -> tuple[list[str], list[BaseException]]:
        """Run the undo steps registered after the first `mark` ones, last first; the failures."""
        errors: list[str] = []
        first: list[BaseException] = []

        def run(what: str, fn: Callable[[], None]) -> None:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - collected and re-raised below
                errors.append(f"{what}: {e}")
                first.append(e)
        while len(self._undo) > mark:
            what, fn, together = self._undo.pop()
            if not together or len(self._undo) <= mark or not self._undo[-1][2]:
                run(what, fn)
                continue
            group = [(what, fn)]
            while len(self._undo) > mark and self._undo[-1][2]:
                group.append(self._undo.pop()[:2])
            threads = [threading.Thread(target=run, args=step, name=f"xdplab: {step[0]}") for step in group]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return errors, first

    # reuse ---------------------------------------------------------------------------------
    def keep(self) -> None:
        """Make the lab reusable: from now on the kernel counts sysctl writes in its
        namespaces, and what they hold now is what reset() compares with. Raises
        InventoryError where that cannot be read (no cgroup v2, no CONFIG_CGROUP_BPF...)."""
        from . import inventory
        if self._kept_at is not None:
            return
        try:
            inventory.watch(self, self.namespaces.values())
            self.on_close("close the sockets kept between tests", self._close_spares)
            mark = len(self._undo)
            baseline = inventory.Inventory.of(self)
        except OSError as e:
            raise inventory.InventoryError(f"read what lab {self.topology.name} holds", str(e),
                                           "run with --lab-reuse off, and report it") from None
        self._kept_at, self.baseline = mark, baseline

    def reset(self, bound: float = 1.0) -> list[str]:
        """Put the lab back as it was kept, for another test: undo everything done since
        (programs detached, captures, ports and processes closed), wait until the kernel has
        finished with the frames (at most `bound` s), flush the neighbours the stack learnt,
        start its fates afresh, and compare what its namespaces hold with Lab.keep's reading.
        Returns every difference (empty: the lab is as built, ready to be used again)."""
        from . import fates, inventory
        from .pace import Bound
        from .settle import wait_quiet
        if self._kept_at is None or self.baseline is None:
            raise LabError(f"reset lab {self.topology.name}", "it was never kept for reuse",
                           "call lab.keep() right after build()")
        errors, _ = self._undo_to(self._kept_at)
        devices = fates.devices(self.interfaces[k] for k in self.focus or self.interfaces)
        if self._recorder is not None:      # forget the test's fates (as closing the lab would)
            self._recorder.unwatch(devices)
        checking = time.perf_counter()
        for made in (self.checks, self.captures, self.snapshots, self.sends, self.fate_marks, self.senders):
            made.clear()
        self.userspace, self._stats_fd = None, None
        problems = [f"undo {e}" for e in errors]
        problems += inventory.differences(self, self.baseline, inventory.Inventory.of(self))
        if not problems:        # a lab that changed is not reused: no need to wait for its frames
            quiet = wait_quiet([self], Bound(bound))
            if not quiet.settled:
                problems.append(f"the kernel was still busy with the last test's frames after {bound} s: "
                                + "; ".join(quiet.busy))
            inventory.flush_learnt_neighbours(self)
        if self._recorder is not None:
            self._recorder.watch(devices)
        self.checked_ms = (time.perf_counter() - checking) * 1e3
        return problems

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _static_neighbours(lab: Lab, v: Veth) -> None:
    """Each end of a veth knows its peer's MAC for good (a permanent neighbour entry), so
    that replies from a namespace's stack never start ARP: a check for "no other frame"
    must not depend on whether a neighbour entry happened to be cached."""
    from . import rtnl
    a, b = lab.interfaces[v.a.key], lab.interfaces[v.b.key]
    for near, far in ((a, b), (b, a)):
        if near.ip and far.ip:
            rtnl.add_neighbour(near.ns, near.ifindex, far.ip, far.mac)


@contextlib.contextmanager
def _refused(action: str, fix: str) -> "Iterator[None]":
    """The kernel's refusal of a build step as a LinkError, in its own words."""
    from .rtnl import RtnlError
    try:
        yield
    except RtnlError as e:
        raise LinkError(action, e.strerror or str(e), fix, errno=e.errno) from None


def _wait_operstate_up(lab: Lab, timeout: float = 5.0) -> None:
    """Wait until every interface is operationally up. Until linkwatch has run, a veth
    that was just set up has no active qdisc and silently drops what is sent on it."""
    from . import rtnl
    from .pace import Bound
    bound = Bound(timeout)
    pending = dict(lab.interfaces)
    while pending:
        for key, i in list(pending.items()):
            if rtnl.link_operstate(i.ns, i.ifindex) == "UP":
                del pending[key]
        if pending and bound.expired():
            raise LinkError(f"bring up {', '.join(pending)}", f"not operationally up after {timeout} s",
                            "check `ip link` in the namespace: is the peer up?")
        if pending:
            time.sleep(0.001)


FATES = ("on", "paths", "off")


def watch_fates(lab: Lab, level: str) -> None:
    """Record the kernel's events about frames on every device of the lab (lab.fates);
    "paths" also counts every successful redirect. Where recording is impossible, say why in
    lab.fates_problem and build on."""
    from . import fates
    if level == "off":
        lab.fates_problem = "the lab was built with fates off"
        return
    try:
        rec = fates.recorder()
    except fates.FatesError as e:
        lab.fates_problem = str(e)
        return
    devices = fates.devices(lab.interfaces[k] for k in lab.focus or lab.interfaces)
    rec.watch(devices)
    lab._recorder = rec
    lab.on_close("stop recording fates", lambda: rec.unwatch(devices))
    if level == "paths":
        rec.follow_paths(True)
        lab.on_close("stop following every redirect", lambda: rec.follow_paths(False))


def build(topology: Topology, names: NameFactory | None = None, *, fates: str = "on") -> Lab:
    """Create the namespaces and veth pairs of `topology`. `fates`: "on" records what the
    kernel does with frames on its devices (Lab.fates: exceptions, failed redirects,
    transmits, skb drops), "paths" also every successful redirect (slower), "off" nothing."""
    if fates not in FATES:
        raise TopologyError("build lab", f"fates={fates!r}", f"use one of {', '.join(map(repr, FATES))}")
    if not isinstance(topology, Topology):
        raise TopologyError("build lab", f"{type(topology).__name__} is not a Topology",
                            "give a lab.topology.Topology (or load a lab file with lab.spec.load)")
    return _build(topology, names, fates)


def _build(topology: Topology, names: NameFactory | None, fates: str) -> Lab:
    """Create the namespaces and veth pairs of `topology`; on any error, remove what was
    made so far and raise."""
    from . import rtnl

    topology.validate()
    names = names or default_factory()
    lab = Lab(topology)
    try:
        for short in topology.all_namespaces:
            ns = Netns.create(names.netns(short), names.owner)
            lab.namespaces[short] = ns
            lab.on_close(f"delete namespace {ns.name}", ns.close)
        for v in topology.veths:
            a_ns, b_ns = lab.namespaces[v.a.ns], lab.namespaces[v.b.ns]
            with _refused(f"create veth {v.a.key} -- {v.b.key}", "check the names and MTUs"):
                a, b = (rtnl.VethEnd(e.name, e.resolved_mac(), e.mtu, e.rx_queues, e.tx_queues) for e in (v.a, v.b))
                rtnl.add_veth(a_ns, a, b, b_ns.fd)
            # No undo step of its own: a veth goes with its namespace. Deleting a namespace
            # unregisters all its devices (and their peers) in one batch, one RCU grace period
            # for them all instead of one per `ip link del` (~25 ms each here).
            for e, ns in ((v.a, a_ns), (v.b, b_ns)):
                with _refused(f"set up {e.key}", "check its address"):
                    index = rtnl.link_index(ns, e.name)
                    if e.ip:
                        addr, plen = e.ip.split("/")
                        rtnl.add_address(ns, index, addr, int(plen))
                lab.interfaces[e.key] = Interface(lab, ns, e.ns, e.name, index, e.resolved_mac(),
                                                  e.ip.split("/")[0] if e.ip else None)
            for e, ns in ((v.a, a_ns), (v.b, b_ns)):
                with _refused(f"bring up {e.key}", "see `ip link` in its namespace"):
                    rtnl.link_up(ns, lab.interfaces[e.key].ifindex)
            with _refused(f"add the static neighbours of {v.a.key} -- {v.b.key}", "see `ip neigh` in the namespaces"):
                _static_neighbours(lab, v)
        _wait_operstate_up(lab)
        watch_fates(lab, fates)
    except BaseException:
        with contextlib.suppress(LabError):
            lab.close()
        raise
    return lab
