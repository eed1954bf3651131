"""The core's unit and live backends with l2fwd's route(): the `dut` fixture's backends."""
from __future__ import annotations

from ..backends import LiveBackend, UnitBackend
from ..errors import LabError
from .seed import EGRESS


class L2fwdUnit(UnitBackend):
    egress_ifindex = 3
    """The ifindex the scenarios route out of: in the unit backend any devmap key (nothing is
    sent there)."""

    def route(self, dst: str, outif: int, mac: str, *, txport: bool = True) -> None:
        """l2fwd_map[dst] = {outif, mac}; with txport, txport_map[outif] too. In the unit
        backend the devmap entry points at this namespace's loopback device (a devmap only
        holds existing devices; nothing is sent to it)."""
        if txport:
            self.fwd.map("txport_map").update(outif.to_bytes(4, "little"), (1).to_bytes(4, "little"))
        self.fwd.set_l2fwd(dst, outif, mac)     # type: ignore[attr-defined]


class L2fwdLive(LiveBackend):
    @property
    def egress_ifindex(self) -> int:
        """The ifindex the scenarios route out of: fwd/veth2's in the seed lab, as the kernel gave it."""
        return self.lab.iface(EGRESS).ifindex

    def route(self, dst: str, outif: int, mac: str, *, txport: bool = True) -> None:
        via = next((i for i in self.lab.interfaces.values() if i.ns is self.fwd.attachments[0].iface.ns
                    and i.ifindex == outif), None)
        if via is None:
            raise LabError(f"route {dst} to ifindex {outif}", "no interface of the forwarder's namespace has it",
                           f"use one of {sorted(self.egress)}")
        if txport:
            self.fwd.set_txport(via)            # type: ignore[attr-defined]
        self.fwd.set_l2fwd(dst, via, mac)       # type: ignore[attr-defined]
