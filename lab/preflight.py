"""Will these frames vanish? Checked before traffic, for every program attached in the lab.

A cpumap an attached program uses must have an entry (a queue). Every entry of every
interface-valued map (devmap, devmap_hash) that an attached program uses is a redirect target: it must be an interface of the lab, and able to receive frames
redirected in the program's attach mode (lab.features.redirect_readiness). Kits add their
own checks (l2fwd: every route's outif is in txport_map) through `Lab.checks`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import LabError, PreflightError
from .features import redirect_readiness

if TYPE_CHECKING:
    from .built import Lab


def problems(lab: "Lab") -> list[str]:
    """Why frames redirected by the lab's programs would vanish, one line per target."""
    out: list[str] = []
    for prog in lab.programs:
        used = set(getattr(prog, "info").map_ids) if hasattr(prog, "info") else None
        for iface, mode, _ in prog.placements():
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
                        out.append(f"{where} -> {r}: attach an XDP program to {there} (xdp_pass), turn GRO on "
                                   f"there (ethtool -K {name} gro on), or attach in skb mode")
    return list(dict.fromkeys(out))


def check(lab: "Lab") -> None:
    """Raise PreflightError when frames sent now would vanish (see problems())."""
    found = problems(lab)
    if found:
        raise PreflightError("preflight the lab's programs", "frames would vanish: " + "; ".join(found),
                             "fix the setup, or mark the test @pytest.mark.expect_drops if the drop is what it tests")
