"""A network namespace handle: create, delete, run code inside it, its own sysfs view.

The test process stays in the root namespace. The only way in is `Netns.entered()`, which
moves the calling thread alone (setns(2) is per thread) and always moves it back. A socket
keeps the namespace it was created in, so sockets and netlink handles are created inside
and used from outside.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import NetnsError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

Socket = socket.socket        # (Netns.socket, a method, hides the module inside the class)
NETNS_RUN_DIR = "/run/netns"          # where `ip netns` looks
STATE_BASE = "/run/xdplab"            # the lab's own records: owners, labs up, sysfs views
SANDBOX_ENV = "XDPLAB_SANDBOX"


def lazy_pyroute2() -> None:
    """Register pyroute2's package without running its __init__, which imports every module
    pyroute2 has (NDB, IPDB, conntrack, IPVS, wireguard, nl80211...: ~150 ms in every process,
    half of a command's start). The package gets its search path only, so `import
    pyroute2.netlink.exceptions` and IPRoute load just what they need; the first attribute
    anyone asks of the package itself (`from pyroute2 import NDB`) runs the real __init__
    then, so the rest of pyroute2 still works as documented. Done when this module is
    imported (before any pyroute2 import of the lab's); a no-op once pyroute2 is imported."""
    import importlib
    import importlib.util
    import sys
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def whole(name: str) -> object:
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:     # a subpackage: just it
            return importlib.import_module(f"pyroute2.{name}")
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, name)
    setattr(package, "__getattr__", whole)
    sys.modules["pyroute2"] = package


def iproute_class() -> Any:           # Any: pyroute2's IPRoute class (pyroute2 is untyped)
    """pyroute2's IPRoute without the rest of pyroute2 (lazy_pyroute2)."""
    lazy_pyroute2()
    from pyroute2.iproute.linux import IPRoute
    return IPRoute


lazy_pyroute2()


def sandbox() -> str:
    """The sandbox this process keeps its records in ("" for none). XDPLAB_SANDBOX=NAME gives a
    process and its children records of their own (owners, labs up, sysfs views, pins), which
    no other session's sweep reads: the tests that start whole sessions (and kill them) run
    side by side, each in one. Read at each call, so a test and the commands it starts agree."""
    name = os.environ.get(SANDBOX_ENV, "")
    if name and (len(name) > 32 or not name.replace("-", "").replace("_", "").isalnum() or not name.isascii()):
        raise NetnsError(f"use sandbox {name!r}", "not 1-32 letters, digits, '-' or '_'",
                         f"set {SANDBOX_ENV} to such a name, or unset it")
    return name


def state_root() -> str:
    return f"{STATE_BASE}/sandbox/{sandbox()}" if sandbox() else STATE_BASE


def sysfs_dir() -> str:
    """One sysfs mount per namespace and process: <ns name>@<pid>."""
    return f"{state_root()}/sysfs"

CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 4096, 16384, 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()


def _check(ret: int, action: str, reason: str = "", fix: str = "") -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise NetnsError(action, reason or os.strerror(err), fix, errno=err)


def _setns(fd: int, action: str) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), action)


@contextlib.contextmanager
def _thread_in(fd: int, action: str) -> Iterator[None]:
    """Move this thread into the namespace `fd` for the block, and always back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd, action)
        try:
            yield
        finally:
            # Not going back would leave the test process in a lab namespace: fatal.
            if _libc.setns(home, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                os.write(2, f"xdplab: return to the original network namespace: {os.strerror(err)}; "
                            "aborting, the process would go on inside a lab namespace\n".encode())
                os._exit(70)
    finally:
        os.close(home)


def sysfs_path(nsname: str, pid: int) -> str:
    return os.path.join(sysfs_dir(), f"{nsname}@{pid}")


def _ensure_run_dir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does, so that the namespace
    mounts under it are seen by `ip netns` and by other mount namespaces."""
    os.makedirs(NETNS_RUN_DIR, exist_ok=True)
    path = NETNS_RUN_DIR.encode()
    if _libc.mount(b"", path, b"none", MS_SHARED | MS_REC, None) != 0:
        _check(_libc.mount(path, path, b"none", MS_BIND | MS_REC, None), f"bind-mount {NETNS_RUN_DIR}")
        _check(_libc.mount(b"", path, b"none", MS_SHARED | MS_REC, None), f"share {NETNS_RUN_DIR}")


class Netns:
    """A named network namespace at /run/netns/<name>, visible to `ip netns`."""

    def __init__(self, name: str, path: str, owned: bool = True) -> None:
        self.name, self.path, self.owned = name, path, owned
        self._fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._ipr: IPRoute | None = None
        self._rtnl: Socket | None = None
        self._kept: dict[tuple[int, int, int], Socket] = {}
        self._seq = 0
        self._sysfs: str | None = None

    # life cycle -----------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, owner: str | None = None) -> "Netns":
        """Create the namespace `name`; it must not exist yet. `owner` as for sweep.record."""
        from . import environment, killpoints, sweep
        environment.require()
        action = f"create network namespace {name}"
        path = os.path.join(NETNS_RUN_DIR, name)
        with _lock:
            _ensure_run_dir()
            try:
                os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
                killpoints.reached("netns file created")
            except FileExistsError:
                raise NetnsError(action, f"{path} already exists",
                                 "remove it with `ip netns delete` or `python -m lab clean`, or pick another name",
                                 errno=errno.EEXIST) from None
            sweep.record(name, owner)   # before it exists: a crash from here on leaves a recorded namespace
            killpoints.reached("netns recorded")
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _check(_libc.unshare(CLONE_NEWNET), action)
                try:
                    _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
                           action, fix="is /run writable and are you root?")
                finally:
                    _setns(home, f"{action}: return to the original namespace")
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                sweep.forget(name)
                raise
            finally:
                os.close(home)
        ns = cls(name, path)
        try:
            ns.sysctl("net/ipv6/conf/all/disable_ipv6", 1)   # quiet: no DAD, RS or MLD frames
            ns.sysctl("net/ipv6/conf/default/disable_ipv6", 1)
            from . import rtnl
            rtnl.link_up(ns, 1)                                  # lo
        except BaseException:
            ns.close()
            raise
        return ns

    @classmethod
    def open(cls, name: str) -> "Netns":
        """A handle on an existing namespace; close() releases the handle and leaves the
        namespace (use remove() to delete it)."""
        path = os.path.join(NETNS_RUN_DIR, name)
        if not os.path.exists(path):
            raise NetnsError(f"open network namespace {name}", f"{path} does not exist",
                             "check `ip netns list`; is the lab up?")
        return cls(name, path, owned=False)

    def remove(self) -> None:
        """Delete the namespace, whoever created it."""
        self.owned = True
        self.close()

    def release(self) -> None:
        """Let go of this handle (netlink socket, sysfs view, fd) and leave the namespace."""
        self.owned = False
        self.close()

    def close(self) -> None:
        """Release the handle; if this handle owns the namespace, delete it too. Idempotent."""
        if self._fd is None:
            return
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self._rtnl is not None:
            self._rtnl.close()
            self._rtnl = None
        for sock in self._kept.values():
            sock.close()
        self._kept.clear()
        if self._sysfs is not None:
            _libc.umount2(self._sysfs.encode(), MNT_DETACH)
            with contextlib.suppress(OSError):
                os.rmdir(self._sysfs)
            self._sysfs = None
        os.close(self._fd)
        self._fd = None
        if not self.owned:
            return
        if (_libc.umount2(self.path.encode(), MNT_DETACH) != 0
                and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT)):
            err = ctypes.get_errno()
            raise NetnsError(f"delete network namespace {self.name}", os.strerror(err),
                             "see `mount | grep netns`", errno=err)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        from . import sweep
        sweep.forget(self.name)

    def __enter__(self) -> "Netns":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    @property
    def closed(self) -> bool:
        return self._fd is None

    # inside ------------------------------------------------------------------------------
    @property
    def fd(self) -> int:
        if self._fd is None:
            raise NetnsError(f"use network namespace {self.name}", "it was already closed",
                             "use the namespace only while its lab is up")
        return self._fd

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the block with this thread inside the namespace (and only this thread)."""
        with _thread_in(self.fd, f"enter network namespace {self.name}"):
            yield

    def socket(self, family: int, type: int, proto: int = 0) -> Socket:
        """A socket that belongs to this namespace, wherever it is used from."""
        with self.entered():
            return socket.socket(family, type, proto)

    def kept_socket(self, family: int, type: int, proto: int = 0) -> Socket:
        """A socket of this namespace for requests that leave nothing on it (ethtool ioctls,
        generic netlink requests answered at once), opened once and closed with the handle:
        the preflight asks before every send."""
        key = (family, type, proto)
        if key not in self._kept:
            self._kept[key] = self.socket(family, type, proto)
        return self._kept[key]

    @property
    def ipr(self) -> "IPRoute":
        """A netlink (rtnetlink) handle bound to this namespace, with extended acks."""
        if self._ipr is None:
            iproute = iproute_class()
            with self.entered():
                self._ipr = iproute(ext_ack=True)
        return self._ipr

    @property
    def rtnl(self) -> Socket:
        """A raw rtnetlink socket of this namespace, for lab.rtnl's reads."""
        if self._rtnl is None:
            from . import rtnl
            sock = self.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)      # NETLINK_ROUTE
            with contextlib.suppress(OSError):          # the kernel's reasons in its acks (4.12+)
                sock.setsockopt(rtnl.SOL_NETLINK, rtnl.NETLINK_CAP_ACK, 1)
                sock.setsockopt(rtnl.SOL_NETLINK, rtnl.NETLINK_EXT_ACK, 1)
            self._rtnl = sock
        return self._rtnl

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def sysctl(self, key: str, value: int | str) -> None:
        """Write /proc/sys/<key> as seen from inside the namespace."""
        with self.entered(), open(f"/proc/sys/{key}", "w") as f:
            f.write(f"{value}\n")

    @property
    def sysfs(self) -> str:
        """A sysfs mounted from inside this namespace: its /sys/class/net shows this
        namespace's devices (the root's /sys shows the root's)."""
        if self._sysfs is None:
            path = sysfs_path(self.name, os.getpid())    # per process: two commands at once do not collide
            os.makedirs(path, exist_ok=True)
            with self.entered():
                _check(_libc.mount(b"sysfs", path.encode(), b"sysfs", 0, None),
                       f"mount sysfs for network namespace {self.name}")
            self._sysfs = path
        return self._sysfs


def list_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []
