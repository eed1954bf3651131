"""One family of exceptions. Messages read "verb object: reason; fix"."""
from __future__ import annotations

import errno as _errno


class LabError(Exception):
    """A lab operation failed. `action` is "verb object", `reason` what went wrong,
    `fix` what the user can do about it; `errno` and `objects` carry the evidence."""

    def __init__(self, action: str, reason: str, fix: str = "", *,
                 errno: int | None = None, objects: tuple[object, ...] = ()) -> None:
        self.action, self.reason, self.fix = action, reason, fix
        self.errno, self.objects = errno, objects
        text = f"{action}: {reason}"
        if errno is not None and _errno.errorcode.get(errno, "") not in reason:
            text += f" ({_errno.errorcode.get(errno, errno)})"
        if fix:
            text += f"; {fix}"
        super().__init__(text)


class TopologyError(LabError):
    """A topology description is invalid (caught before anything is built)."""


class NetnsError(LabError):
    """A network namespace could not be created, entered or removed."""


class LinkError(LabError):
    """A link (veth) could not be created, configured or deleted."""


class CompileError(LabError):
    """bcc could not compile or load a BPF program."""


class XdpError(LabError):
    """An XDP program could not be attached, detached, or is not attached as asked."""


class MapError(LabError):
    """A map key or value does not fit the map, or a map operation failed."""


class PreflightError(LabError):
    """Traffic would vanish: a redirect target cannot receive, or a route has no egress."""


class PacketError(LabError):
    """A frame or mask could not be built."""


class DataplaneError(LabError):
    """A frame could not be sent or captured."""


class EnvironmentError_(LabError):
    """The machine lacks something the lab needs (lab.environment says what and the fix)."""


class BtfError(LabError):
    """Bytes that should be BTF type information are not."""
