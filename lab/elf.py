"""Load a clang-built BPF ELF object (libbpf style: SEC("xdp"), BTF-defined maps) with
libbpf, the loader teams ship with their own control planes.

Why libbpf through ctypes: Debian's libbpf1 is libbpf itself, maintained with the kernel,
and the lab needs a dozen of its functions; objects it loads live in this process and go
when it closes them or exits. bpftool would have to pin programs and maps in a bpffs to
hand them over (objects that outlive a crash), and iproute2 attaches an object but cannot
program its maps. The young PyPI bindings (pylibbpf 0.0.7) would add a dependency for what
these few lines do.

One object is loaded once, with every program in it: they share the object's maps, as
they do under any libbpf control plane. Maps the object asks libbpf to pin
(`__uint(pinning, LIBBPF_PIN_BY_NAME)`) are pinned under a bpffs directory of the lab's
own (`pin_root_path`), never in /sys/fs/bpf itself, and removed when the object is closed.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

from . import bpfsys, environment
from .btf import Btf, map_layouts
from .errors import CompileError
from .maps import Field, Layout, MapView

if TYPE_CHECKING:
    from .bccload import CapturedStderr

_lib: ctypes.CDLL | None = None


class _OpenOpts(ctypes.Structure):
    """struct bpf_object_open_opts of libbpf 1.x, as far as the lab sets it."""
    _fields_ = [("sz", ctypes.c_size_t), ("object_name", ctypes.c_char_p), ("relaxed_maps", ctypes.c_bool),
                ("pin_root_path", ctypes.c_char_p), ("_stub", ctypes.c_uint32), ("kconfig", ctypes.c_char_p),
                ("btf_custom_path", ctypes.c_char_p), ("kernel_log_buf", ctypes.c_char_p),
                ("kernel_log_size", ctypes.c_size_t), ("kernel_log_level", ctypes.c_uint32)]


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
                                ("bpf_object__next_program", p, [p, p]),
                                ("bpf_program__name", ctypes.c_char_p, [p]),
                                ("bpf_program__section_name", ctypes.c_char_p, [p]),
                                ("bpf_program__fd", ctypes.c_int, [p]),
                                ("bpf_object__next_map", p, [p, p]),
                                ("bpf_map__name", ctypes.c_char_p, [p]),
                                ("bpf_map__fd", ctypes.c_int, [p]),
                                ("libbpf_strerror", ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]),
                                # what the fates recorder needs: tracing programs, their links, a ring buffer
                                ("bpf_object__find_program_by_name", p, [p, ctypes.c_char_p]),
                                ("bpf_program__set_autoload", ctypes.c_int, [p, ctypes.c_bool]),
                                ("bpf_program__attach", p, [p]),
                                ("bpf_program__attach_cgroup", p, [p, ctypes.c_int]),
                                ("bpf_link__destroy", ctypes.c_int, [p]),
                                ("bpf_object__find_map_fd_by_name", ctypes.c_int, [p, ctypes.c_char_p]),
                                ("bpf_object__find_map_by_name", p, [p, ctypes.c_char_p]),
                                ("bpf_map__set_max_entries", ctypes.c_int, [p, ctypes.c_uint32]),
                                ("ring_buffer__new", p, [ctypes.c_int, p, p, p]),
                                ("ring_buffer__consume", ctypes.c_int, [p]),
                                ("ring_buffer__free", None, [p]),
                                ("btf__load_vmlinux_btf", p, []),
                                ("btf__find_by_name_kind", ctypes.c_int, [p, ctypes.c_char_p, ctypes.c_uint32]),
                                ("btf__type_by_id", p, [p, ctypes.c_uint32]),
                                ("btf__name_by_offset", ctypes.c_char_p, [p, ctypes.c_uint32]),
                                ("btf__free", None, [p])):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _lib = lib
    return _lib


def open_object(path: Path, error: type[Exception]) -> "tuple[int, CapturedStderr]":
    """bpf_object__open_file of an object the lab ships (bpf/*.bpf.o: the fates recorder, the
    sysctl watch), libbpf's messages captured for the load that follows; raises `error`
    naming the file and the fix."""
    from .bccload import CapturedStderr
    if not path.is_file():
        raise error(f"load {path.name}", "no such file", "build it: make bpf")
    opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts))
    log = CapturedStderr()
    with log:
        obj = libbpf().bpf_object__open_file(str(path).encode(), ctypes.byref(opts))
    if not obj:
        raise error(f"open {path.name}", strerror(ctypes.get_errno()), "rebuild it: make bpf")
    return obj, log


def strerror(err: int) -> str:
    """libbpf's text for its own error codes (4000 and up: "Unknown error 4001" otherwise)."""
    buf = ctypes.create_string_buffer(256)
    libbpf().libbpf_strerror(err, buf, len(buf))
    return buf.value.decode() or os.strerror(err)


class ElfObject:
    """An ELF object opened and loaded by libbpf: every program's fd and type, and its maps."""

    def __init__(self, path: Path, pin_dir: str) -> None:
        from .bccload import CapturedStderr
        environment.require()
        self.path, self.pin_dir = path, pin_dir
        if not path.is_file():
            raise CompileError(f"load {path}", "no such file",
                               "build it (`make bpf` runs clang on bpf/*.bpf.c) or give the right path")
        lib = libbpf()
        os.makedirs(pin_dir, exist_ok=True)
        opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts), pin_root_path=pin_dir.encode())
        log = CapturedStderr()
        with log:      # libbpf prints its diagnostics (and the verifier's log) on stderr
            obj = lib.bpf_object__open_file(str(path).encode(), ctypes.byref(opts))
            err = ctypes.get_errno() if not obj else -lib.bpf_object__load(obj)
        if not obj:
            self._remove_pins()
            raise CompileError(f"open {path.name} with libbpf", f"{strerror(err)}:\n{log.text.strip()}",
                               "is it a BPF ELF object built by clang -target bpf?", errno=err)
        self._obj: int | None = obj
        if err:
            self.close()
            refused = err in (_errno.EACCES, _errno.EINVAL, _errno.EPERM) and "processed" in log.text
            raise CompileError(f"load {path.name}",
                               ("the verifier refused it" if refused else strerror(err)) + f":\n{log.text.strip()}",
                               "fix the program: libbpf's log above ends at the refused instruction",
                               errno=err if err < 4000 else None)
        self.programs: dict[str, int] = {}      # function name -> fd
        self.sections: dict[str, str] = {}
        prog = lib.bpf_object__next_program(obj, None)
        while prog:
            name = lib.bpf_program__name(prog).decode()
            self.programs[name] = lib.bpf_program__fd(prog)
            self.sections[name] = (lib.bpf_program__section_name(prog) or b"").decode()
            prog = lib.bpf_object__next_program(obj, prog)
        self.maps: dict[str, MapView] = {}
        btf_id = next((bpfsys.prog_info(fd).btf_id for fd in self.programs.values()), 0)
        btf = Btf.by_id(btf_id) if btf_id else None
        m = lib.bpf_object__next_map(obj, None)
        while m:
            name = lib.bpf_map__name(m).decode()
            if "." not in name:          # .rodata/.bss hold constants, not the program's maps
                fd = lib.bpf_map__fd(m)
                info = bpfsys.map_info(fd)
                self.maps[name] = MapView(fd, *(map_layouts(info, btf) or raw_layouts(info)))
            m = lib.bpf_object__next_map(obj, m)

    def _remove_pins(self) -> None:
        """Unpin what libbpf pinned for this object and remove its directory."""
        try:
            entries = os.listdir(self.pin_dir)
        except FileNotFoundError:
            return
        for e in entries:
            os.unlink(os.path.join(self.pin_dir, e))
        os.rmdir(self.pin_dir)

    def release(self) -> None:
        """Close the object, leaving its pins (a lab that is up keeps them until `lab down`)."""
        if self._obj is not None:
            libbpf().bpf_object__close(self._obj)
            self._obj = None

    def close(self) -> None:
        if self._obj is not None:
            libbpf().bpf_object__close(self._obj)
            self._obj = None
            self._remove_pins()


def raw_layouts(info: bpfsys.MapInfo) -> tuple[Layout, Layout]:
    """Layouts for a map without BTF types (devmap, xskmap): integers by their size."""
    def plain(name: str, size: int) -> Layout:
        ctype = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}.get(size, f"u8[{size}]")
        return Layout(name, (Field("value", ctype, 0, size),), size)
    return plain("key", info.key_size), plain("value", info.value_size)
