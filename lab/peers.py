"""How the peers of redirect targets are set up, the one rule for it, and attaching a
program with its peers ready.

A veth takes frames that native XDP redirects into it only while its peer runs NAPI: an
XDP program on the peer, or GRO on the peer (drivers/net/veth.c). `none` leaves the peers
as built, `pass` attaches xdp_pass to them in drv mode, `gro` turns GRO on there.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from . import ethtool
from .errors import LabError
from .programs import PACKAGE_BPF, Program, XdpProgram

if TYPE_CHECKING:
    from .built import Interface, Lab
    from .xdp import Attachment

PEERS = ("none", "pass", "gro")
XDP_PASS = Program(PACKAGE_BPF / "xdp_pass.bpf.o", "xdp_pass")


def default_peer(mode: str) -> str:
    """The default set-up of redirect targets' peers: what makes frames arrive in `mode`."""
    return "pass" if mode == "drv" else "none"


def check_peer(how: str) -> str:
    if how not in PEERS:
        raise LabError(f"set up peers {how!r}", "unknown set-up", f"use one of {', '.join(PEERS)}")
    return how


def set_up_peers(lab: "Lab", at: "Interface", how: str) -> Callable[[], None]:
    """Set up the peers of every other interface of `at`'s namespace (the redirect targets
    of a program on `at`) as `how`; returns the undo (last made, first undone)."""
    check_peer(how)
    passes: list[XdpProgram] = []
    gro: list[tuple["Interface", bool]] = []     # and whether GRO was on before (5.10: on by default)

    def undo() -> None:
        while gro:
            peer, was = gro.pop()
            if not peer.ns.closed:
                ethtool.set_gro(peer, was)
        while passes:
            passes.pop().close()
    try:
        for target in lab.interfaces.values():
            if target.ns is not at.ns or target is at:
                continue
            peer = lab.peer(target.key)
            if how == "pass":
                p = XdpProgram(XDP_PASS) if not passes else passes[0].sibling("xdp_pass")
                passes.append(p)
                p.attach(peer, "drv")
            elif how == "gro":
                was = ethtool.gro(peer)
                ethtool.set_gro(peer, True)
                gro.append((peer, was))
    except BaseException:
        undo()
        raise
    return undo


@contextlib.contextmanager
def peers_ready(lab: "Lab", at: "Interface", how: str) -> Iterator[None]:
    """The peers set up as `how` (see set_up_peers) for the block, undone at its end."""
    undo = set_up_peers(lab, at, how)
    try:
        yield
    finally:
        undo()


def attach_with_peers(lab: "Lab", program: XdpProgram, where: "Interface", mode: str,
                      peers: str | None = None) -> "tuple[Attachment, Callable[[], None]]":
    """`program` attached to `where` in `mode`, the redirect targets' peers set up first as
    `peers` (default: default_peer(mode)): the attachment, and the undo (detach, then the
    peers). The one way the lab attaches a program with its peers: the fixtures and `attached`
    undo it at the end of a test, `lab up` only if it fails."""
    undo_peers = set_up_peers(lab, where, peers or default_peer(mode))
    try:
        attachment = program.attach(where, mode)
    except BaseException:
        undo_peers()
        raise

    def undo() -> None:
        attachment.close()
        undo_peers()
    return attachment, undo


@contextlib.contextmanager
def attached(lab: "Lab", program: XdpProgram, at: str, mode: str, peers: str | None = None) -> Iterator[XdpProgram]:
    """`program` attached to interface `at` in `mode`, the redirect targets' peers set up as
    `peers` (default: default_peer(mode)); detached and undone at the end of the block."""
    _, undo = attach_with_peers(lab, program, lab.iface(at), mode, peers)
    try:
        yield program
    finally:
        undo()
