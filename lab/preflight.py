"""Will these frames vanish? Checked before traffic, for every program attached in the lab.

A cpumap an attached program uses must have an entry (a queue). Every entry of every
interface-valued map (devmap, devmap_hash) that an attached program uses is a redirect
target: it must be an interface of the lab, and able to receive frames redirected in the
program's attach mode (lab.features.redirect_readiness). A program attached in drv mode
to a veth that can return XDP_TX (it moves XDP_TX into r0) sends frames back into the
veth's peer, which takes them only while it runs a native XDP program: GRO alone accepts
them and never delivers them (see scenarios/test_xdp_tx.py). Kits add their own checks
(l2fwd: every route's outif is in txport_map) through `Lab.checks`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import bpfsys, ethtool, xdp
from .errors import LabError, PreflightError
from .features import redirect_readiness, veth_gro_napi

XDP_TX = 3

if TYPE_CHECKING:
    from .built import Interface, Lab


def problems(lab: "Lab") -> list[str]:
    """Why frames redirected by the lab's programs would vanish, one line per target."""
    out: list[str] = []
    for prog in lab.programs:
        used = set(getattr(prog, "info").map_ids) if hasattr(prog, "info") else None
        for iface, mode, _ in prog.placements():
            if mode == "drv":
                out += _tx_back(lab, prog, iface)
            for m in prog.maps.values():
                if used is not None and m.info.id not in used:
                    continue
                if m.info.type == "cpumap" and not any(v is not None for _, v in m.items()):
                    out.append(f"{m.name} of {prog.name} ({mode} on {iface.key}) has no entry: bpf_redirect_map "
                               "into it fails (a qsize of 0 deletes an entry); give the CPU an entry with a "
                               "queue size, e.g. 2048")
                    continue
                if not m.holds_interfaces:
                    continue
                home = m.home or iface
                for key, value in m.items():
                    if value is None:
                        continue
                    index = int.from_bytes(value[:4], "little")
                    where = f"{m.name}[{int.from_bytes(key, 'little')}] of {prog.name} ({mode} on {iface.key})"
                    target = next((i for i in lab.interfaces.values() if i.ns is home.ns and i.ifindex == index), None)
                    if target is None:
                        out.append(f"{where} holds ifindex {index}, which is no interface of the lab in namespace "
                                   f"{home.nsname}: write the entry with the interface itself (map.put(k, iface))")
                        continue
                    r = redirect_readiness(lab, target, mode)
                    if not r.ready:
                        try:
                            peer = lab.peer(target.key)
                            there, name = peer.key, peer.name
                        except LabError:
                            there, name = f"the peer of {target.key}", "PEER"
                        gro = f", turn GRO on there (ethtool -K {name} gro on)," if veth_gro_napi() else ""
                        out.append(f"{where} -> {r}: attach an XDP program to {there} (xdp_pass){gro} or attach in "
                                   "skb mode")
    return list(dict.fromkeys(out))


def _tx_back(lab: "Lab", prog: object, iface: "Interface") -> list[str]:
    """XDP_TX out of `iface` in drv mode: its peer must run a native XDP program."""
    fd = getattr(prog, "fd", None)
    if fd is None:
        return []
    at = _tx_at(fd)
    if at is None:
        return []
    try:
        peer = lab.peer(iface.key)
    except LabError:                    # a peer outside the namespaces looked at: not checked
        return []
    state = xdp.query(peer)
    if state.mode in ("drv", "multi"):
        return []
    gro = ""
    if ethtool.gro(peer):
        gro = (" and GRO on: it accepts the frames and never delivers them" if veth_gro_napi() else
               " and GRO on, which does not turn on a veth's NAPI before Linux 5.13")
    return [f"{prog.name} (drv on {iface.key}) can return XDP_TX (r0 = 3 at instruction {at}): in drv mode the "  # type: ignore[attr-defined]
            f"frames go back into {peer.key}, which has {state}{gro}; attach an XDP program to {peer.key} in drv "
            f"mode (xdp_pass), or attach {prog.name} in skb mode"]  # type: ignore[attr-defined]


_TX_AT: dict[int, int | None] = {}     # program id -> where it returns XDP_TX (ids are never reused)


def _tx_at(fd: int) -> int | None:
    """Where the program can return XDP_TX (bpfsys.returns_constant), read once per program:
    a loaded program's instructions never change, and the preflight runs before every send."""
    prog_id = bpfsys.prog_info(fd).id
    if prog_id not in _TX_AT:
        _TX_AT[prog_id] = bpfsys.returns_constant(bpfsys.prog_xlated(fd), XDP_TX, bpfsys.prog_main_length(fd))
    return _TX_AT[prog_id]


def check(lab: "Lab") -> None:
    """Raise PreflightError when frames sent now would vanish (see problems())."""
    found = problems(lab)
    if found:
        raise PreflightError("preflight the lab's programs", "frames would vanish: " + "; ".join(found),
                             "fix the setup, or mark the test @pytest.mark.expect_drops if the drop is what it tests")
