"""xdplab: a network-namespace test lab for XDP programs (see the README).

`BPF_DIR` is where the lab's own BPF sources and objects are: bpf/ next to lab/ in a
checkout (`make bpf` builds the objects), or the package data of an installed xdplab
(lab/bpf/, built when the package was).
"""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
BPF_DIR = _HERE.parent / "bpf" if (_HERE.parent / "bpf" / "l2fwd.c").is_file() else _HERE / "bpf"
