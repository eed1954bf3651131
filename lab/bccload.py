"""Compile a bcc C source (once per process and set of flags) and load its functions.

bcc compiles the whole source into one module: every function loaded from it shares its
maps. Functions are loaded as XDP programs on first use; their maps are typed from the
program's BTF where the map has it (bcc gives none to devmap/xskmap), else from bcc's
ctypes declarations.
"""
from __future__ import annotations

import ctypes
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import bpfsys, environment
from .btf import Btf, map_layouts
from .errors import CompileError
from .maps import Layout, MapView

compile_count = 0
"""How many bcc compiles this process ran (the benchmark and tests read it)."""


class CapturedStderr:
    """Capture what bcc/clang/libbpf print on fd 2 (the compiler's and verifier's words)."""

    text = ""

    def __enter__(self) -> "CapturedStderr":
        sys.stderr.flush()
        self._tmp = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._tmp.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._tmp.seek(0)
        self.text = self._tmp.read().decode(errors="replace")
        self._tmp.close()


class BccObject:
    """A C source compiled by bcc: its functions (loaded as XDP on demand) and its maps."""

    def __init__(self, path: Path, cflags: tuple[str, ...]) -> None:
        global compile_count
        environment.require(bcc=True)
        import bcc  # Debian's python3-bpfcc (untyped)
        if not path.is_file():
            raise CompileError(f"compile {path}", "no such file", "give the path of a bcc C source")
        self.path, self.cflags = path, cflags
        stderr = CapturedStderr()
        failure: Exception | None = None
        with stderr:
            try:
                self.bpf: Any = bcc.BPF(      # Any: bcc is untyped
                    text=path.read_bytes(), cflags=list(cflags))
            except Exception as e:  # bcc raises bare Exception with the diagnostics on stderr
                failure = e
        if failure is not None:
            source = path.read_text(errors="replace")
            libbpf_style = "bpf/bpf_helpers.h" in source or 'SEC("' in source
            fix = (f"{path.name} is written for libbpf (SEC(...), bpf/bpf_helpers.h), not bcc: build it with clang "
                   f"(clang -O2 -g -target bpf -I/usr/include/{os.uname().machine}-linux-gnu -c {path.name} -o "
                   f"{path.stem}.o) and give the .o" if libbpf_style else "fix the C source (diagnostics above)")
            raise CompileError(f"compile {path.name} with bcc", f"{failure}:\n{stderr.text.strip()}", fix) from None
        compile_count += 1
        lib = bcc.lib
        lib.bpf_num_functions.restype, lib.bpf_num_functions.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
        lib.bpf_function_name.restype = ctypes.c_char_p
        lib.bpf_function_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.functions = [lib.bpf_function_name(self.bpf.module, i).decode()
                          for i in range(lib.bpf_num_functions(self.bpf.module))]
        self.programs: dict[str, int] = {}
        self.sections = {f: "xdp" for f in self.functions}     # bcc loads any function as the type asked
        self.maps: dict[str, MapView] = {}
        self.pin_dir = ""
        self._btf: Btf | None = None

    def load(self, function: str) -> int:
        """The fd of `function`, loaded as an XDP program on first use."""
        if function not in self.programs:
            import bcc
            stderr = CapturedStderr()
            failure: Exception | None = None
            with stderr:
                try:
                    fn = self.bpf.load_func(function.encode(), bcc.BPF.XDP)
                except Exception as e:  # noqa: BLE001 - bcc raises bare Exception
                    failure = e
            if failure is not None:
                raise CompileError(f"load {function} from {self.path.name}",
                                   f"the verifier refused it:\n{stderr.text.strip()}",
                                   "fix the program: the verifier's log above ends at the refused instruction")
            self.programs[function] = fn.fd
            if not self.maps:
                self._type_maps(fn.fd)
        return self.programs[function]

    def _type_maps(self, prog_fd: int) -> None:
        import bcc
        info = bpfsys.prog_info(prog_fd)
        btf = Btf.by_id(info.btf_id) if info.btf_id else None
        lib = bcc.lib
        lib.bpf_num_tables.restype, lib.bpf_num_tables.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
        lib.bpf_table_name.restype = ctypes.c_char_p
        lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        for i in range(lib.bpf_num_tables(self.bpf.module)):
            name = lib.bpf_table_name(self.bpf.module, i).decode()
            t = self.bpf.get_table(name.encode())
            minfo = bpfsys.map_info(t.map_fd)
            key, value = map_layouts(minfo, btf) or (Layout.from_ctypes(f"{name} key", t.Key),
                                                     Layout.from_ctypes(f"{name} value", t.Leaf))
            self.maps[name] = MapView(t.map_fd, key, value)

    def close(self) -> None:
        if getattr(self, "bpf", None) is not None:
            self.bpf.cleanup()
            self.bpf = None
