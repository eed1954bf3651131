"""Load a clang-built BPF ELF object (libbpf style: SEC("xdp"), BTF-defined maps) with
libbpf, the loader teams ship with their own control planes.

Why libbpf through ctypes: Debian's libbpf1 is libbpf itself, maintained with the kernel,
and the lab needs eight of its functions; objects it loads live in this process and go
when it closes them or exits (nothing pinned, nothing to leak). bpftool would have to pin
programs and maps in a bpffs to hand them over (objects that outlive a crash), and
iproute2 attaches an object but cannot program its maps. The young PyPI bindings
(pylibbpf 0.0.7) would add a dependency for what these few lines do.

Once loaded, an ELF program is used like a bcc one: its fd, its maps by name typed from the
kernel's BTF, the same attach modes, map helpers, assertions and reports.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import os
from typing import TYPE_CHECKING

from . import bpfsys, environment
from .btf import Btf, map_layouts
from .errors import CompileError
from .maps import Field, Layout, MapView

if TYPE_CHECKING:
    from .forwarder import Program

_lib: ctypes.CDLL | None = None


def libbpf() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError as e:
            raise CompileError("load libbpf", str(e), "install Debian's libbpf1 (make setup)") from None
        p = ctypes.c_void_p
        for name, res, args in (("bpf_object__open_file", p, [ctypes.c_char_p, p]),
                                ("bpf_object__load", ctypes.c_int, [p]),
                                ("bpf_object__close", None, [p]),
                                ("bpf_object__find_program_by_name", p, [p, ctypes.c_char_p]),
                                ("bpf_program__fd", ctypes.c_int, [p]),
                                ("bpf_object__next_map", p, [p, p]),
                                ("bpf_map__name", ctypes.c_char_p, [p]),
                                ("bpf_map__fd", ctypes.c_int, [p])):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _lib = lib
    return _lib


class ElfProgram:
    """An ELF object opened and loaded by libbpf: the program's fd and its maps."""

    def __init__(self, program: "Program") -> None:
        from .forwarder import _CapturedStderr
        environment.require()
        self.program = program
        path = program.source
        if not path.is_file():
            raise CompileError(f"load {path.name}", f"{path} does not exist",
                               "build it: `make bpf` runs clang on bpf/*.bpf.c")
        lib = libbpf()
        log = _CapturedStderr()
        with log:      # libbpf prints its diagnostics (and the verifier's log) on stderr
            obj = lib.bpf_object__open_file(str(path).encode(), None)
            err = ctypes.get_errno() if not obj else -lib.bpf_object__load(obj)
        if not obj:
            raise CompileError(f"open {path.name} with libbpf", f"{os.strerror(err)}:\n{log.text.strip()}",
                               "is it a BPF ELF object built by clang -target bpf?", errno=err)
        self._obj: int | None = obj
        if err:
            self.close()
            refused = err in (_errno.EACCES, _errno.EINVAL, _errno.EPERM) and "processed" in log.text
            raise CompileError(f"load {program.function} from {path.name}",
                               ("the verifier refused it" if refused else os.strerror(err)) + f":\n{log.text.strip()}",
                               "fix the program: libbpf's log above ends at the refused instruction", errno=err)
        prog = lib.bpf_object__find_program_by_name(obj, program.function.encode())
        if not prog:
            self.close()
            raise CompileError(f"find program {program.function} in {path.name}", "no such program",
                               "name the SEC(\"xdp\") function of the object")
        self.fd: int = lib.bpf_program__fd(prog)
        self.info = bpfsys.prog_info(self.fd)
        self.clean = False
        self.maps: dict[str, MapView] = {}
        btf = Btf.by_id(self.info.btf_id) if self.info.btf_id else None
        m = lib.bpf_object__next_map(obj, None)
        while m:
            name = lib.bpf_map__name(m).decode()
            if "." not in name:          # .rodata/.bss hold constants, not the program's maps
                fd = lib.bpf_map__fd(m)
                info = bpfsys.map_info(fd)
                self.maps[name] = MapView(fd, *(map_layouts(info, btf) or _raw_layouts(info)))
            m = lib.bpf_object__next_map(obj, m)

    def close(self) -> None:
        if self._obj is not None:
            libbpf().bpf_object__close(self._obj)
            self._obj = None


def _raw_layouts(info: bpfsys.MapInfo) -> tuple[Layout, Layout]:
    """Layouts for a map without BTF types (devmap, xskmap): integers by their size."""
    def plain(name: str, size: int) -> Layout:
        ctype = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}.get(size, f"u8[{size}]")
        return Layout(name, (Field("value", ctype, 0, size),), size)
    return plain("key", info.key_size), plain("value", info.value_size)
