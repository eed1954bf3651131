"""What the lab needs from the machine, checked once per process before the first kernel
object: root with CAP_NET_ADMIN and CAP_SYS_ADMIN, bpffs and tracefs mounted, bcc
importable, kernel headers for bcc. Each miss is an error that names the fix."""
from __future__ import annotations

import functools
import os
import platform

from .errors import EnvironmentError_

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF = 12, 21, 39
SETUP = "run `make setup` as root (scripts/bootstrap.sh installs and mounts what is missing)"


NEEDS_ROOT = "needs root and CAP_NET_ADMIN: run as root or use the Vagrantfile"   # a root test's skip reason


def lacks_root() -> bool:
    """Not root, or root without CAP_NET_ADMIN or CAP_SYS_ADMIN (a container run unprivileged)."""
    return os.geteuid() != 0 or any(not _cap_eff() >> bit & 1 for bit in (CAP_NET_ADMIN, CAP_SYS_ADMIN))


def _mounted(path: str, fstype: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path and line.split()[2] == fstype for line in f)


def _cap_eff() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def problems(*, bcc: bool) -> list[str]:
    """Everything missing, as "reason; fix" strings (empty: all is there)."""
    out = []
    if os.geteuid() != 0:
        out.append(f"not running as root (euid {os.geteuid()}): the lab creates namespaces and attaches XDP; "
                   "run as root (sudo make test)")
    else:
        caps = _cap_eff()
        missing = [name for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"))
                   if not caps >> bit & 1]
        if missing:
            out.append(f"missing {', '.join(missing)} (CapEff {caps:#x}); run in a privileged VM or container "
                       "(docker --privileged), not with these capabilities dropped")
    if not _mounted("/sys/fs/bpf", "bpf"):
        out.append(f"bpffs is not mounted on /sys/fs/bpf; mount -t bpf bpf /sys/fs/bpf, or {SETUP}")
    if not _mounted("/sys/kernel/tracing", "tracefs"):
        out.append(f"tracefs is not mounted on /sys/kernel/tracing; mount -t tracefs tracefs /sys/kernel/tracing, "
                   f"or {SETUP}")
    if bcc:
        try:
            import bcc as _bcc  # noqa: F401  (Debian's python3-bpfcc)
        except ImportError as e:
            out.append(f"import bcc: {e}; install Debian's python3-bpfcc and use a Python that sees it "
                       f"(never PyPI's 'bcc'), or {SETUP}")
        release = platform.release()
        if not os.environ.get("BCC_KERNEL_SOURCE") and not os.path.isdir(f"/lib/modules/{release}/build/include"):
            out.append(f"no kernel headers for {release} (/lib/modules/{release}/build), which bcc needs to "
                       f"compile; {SETUP} (it links Debian's headers for a custom kernel)")
    return out


@functools.cache
def _checked(bcc: bool) -> tuple[str, ...]:
    return tuple(problems(bcc=bcc))


def require(*, bcc: bool = False) -> None:
    """Raise one error naming everything that is missing (checked once per process)."""
    found = _checked(bcc)
    if found:
        raise EnvironmentError_("use the XDP lab on this machine", "; ".join(found))
