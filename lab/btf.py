"""BTF, the kernel's type information, parsed enough to lay out map keys and values.

A program's maps carry the BTF ids of their key and value types; `map_layouts()` turns
those into `Layout`s (field names, C types, offsets, sizes), which is the truth a control
plane's encoding is checked against.
"""
from __future__ import annotations

import contextlib
import ctypes
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from . import bpfsys
from .errors import BtfError
from .maps import Field, Layout

T = TypeVar("T")

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_QUALIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)


@dataclass
class BtfType:
    id: int
    kind: int
    name: str
    size_or_type: int
    vlen: int
    kflag: bool
    extra: tuple[Any, ...] = ()  # INT: (encoding, bits); ARRAY: (elem, index, n); STRUCT: ((name, type, bit_off), ...)


class Btf:
    """The types of one BTF object, by id (id 0 is void)."""

    def __init__(self, blob: bytes) -> None:
        if len(blob) < 24:
            raise BtfError("read BTF", f"{len(blob)} bytes: shorter than a BTF header (24)",
                           "give the .BTF section of a BPF object, or a kernel's /sys/kernel/btf/vmlinux")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", blob)
        if magic != 0xEB9F:
            raise BtfError("read BTF", f"magic {magic:#x}, not 0xeb9f",
                           "give the .BTF section of a BPF object, or a kernel's /sys/kernel/btf/vmlinux")
        types = blob[hdr_len + type_off:hdr_len + type_off + type_len]
        self.strings = blob[hdr_len + str_off:hdr_len + str_off + str_len]
        self.types: dict[int, BtfType] = {}
        off, tid = 0, 1
        while off < len(types):
            name_off, info, size_or_type = struct.unpack_from("<III", types, off)
            off += 12
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31)
            extra: tuple[Any, ...] = ()         # Any: its shape depends on the kind (BtfType.extra)
            if kind == INT:
                (v,) = struct.unpack_from("<I", types, off)
                extra, off = ((v >> 24) & 0xF, v & 0xFF), off + 4
            elif kind == ARRAY:
                extra, off = struct.unpack_from("<III", types, off), off + 12
            elif kind in (STRUCT, UNION):
                members = []
                for _ in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", types, off)
                    members.append((self._str(m_name), m_type, m_off & 0xFFFFFF if kflag else m_off))
                    off += 12
                extra = tuple(members)
            elif kind in (ENUM, FUNC_PROTO, DATASEC):
                off += (8 if kind != DATASEC else 12) * vlen
            elif kind == ENUM64:
                off += 12 * vlen
            elif kind in (VAR, DECL_TAG):
                off += 4
            self.types[tid] = BtfType(tid, kind, self._str(name_off), size_or_type, vlen, kflag, extra)
            tid += 1

    @classmethod
    def by_id(cls, btf_id: int) -> "Btf":
        return cls(bpfsys.btf_blob(btf_id))

    def _str(self, off: int) -> str:
        end = self.strings.index(b"\0", off)
        return self.strings[off:end].decode()

    def resolve(self, tid: int) -> BtfType:
        """Follow typedefs and qualifiers to the underlying type."""
        t = self.types[tid]
        while t.kind in _QUALIFIERS:
            t = self.types[t.size_or_type]
        return t

    def sizeof(self, tid: int) -> int:
        t = self.resolve(tid)
        if t.kind == ARRAY:
            return self.sizeof(t.extra[0]) * int(t.extra[2])
        if t.kind == PTR:
            return 8
        return t.size_or_type

    def ctype(self, tid: int) -> str:
        """A C type in the Layout notation: u32, i64, u8[6]; other types as u8[size]."""
        t = self.resolve(tid)
        if t.kind == INT:
            signed = t.extra[0] & 1
            return f"{'i' if signed else 'u'}{t.extra[1]}"
        if t.kind == ENUM:
            return f"u{8 * t.size_or_type}"
        if t.kind == ARRAY:
            elem = self.ctype(t.extra[0])
            if "[" not in elem:
                return f"{elem}[{t.extra[2]}]"
        return f"u8[{self.sizeof(tid)}]"

    def describe_name(self, tid: int) -> str:
        t = self.types[tid]
        r = self.resolve(tid)
        if r.kind in (STRUCT, UNION):
            return f"{'struct' if r.kind == STRUCT else 'union'} {r.name}".strip()
        return t.name or self.ctype(tid)

    def layout(self, tid: int) -> Layout:
        """The Layout of type `tid`: a struct's members, or one field "value" for a scalar."""
        t = self.resolve(tid)
        name = self.describe_name(tid)
        if t.kind == STRUCT:
            fields = tuple(Field(m_name, self.ctype(m_type), bit_off // 8, self.sizeof(m_type))
                           for m_name, m_type, bit_off in t.extra)
            return Layout(name, fields, t.size_or_type)
        return Layout(name, (Field("value", self.ctype(tid), 0, self.sizeof(tid)),), self.sizeof(tid))


def map_layouts(info: bpfsys.MapInfo, btf: Btf | None = None) -> tuple[Layout, Layout] | None:
    """The key and value layouts of a map from its BTF, or None when it has none."""
    if not info.btf_id or not info.btf_value_type_id:
        return None
    btf = btf or Btf.by_id(info.btf_id)
    key = btf.layout(info.btf_key_type_id) if info.btf_key_type_id else None
    value = btf.layout(info.btf_value_type_id)
    return (key or Layout("key", (Field("value", f"u8[{info.key_size}]", 0, info.key_size),), info.key_size), value)


BTF_KIND_STRUCT = STRUCT


def type_words(ptr: int, n: int) -> tuple[int, ...]:
    """`n` u32 words of a struct btf_type (name_off, info, size/type) and what follows it,
    at a pointer libbpf returned (btf__type_by_id)."""
    return tuple(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint32 * n)).contents)


@contextlib.contextmanager
def vmlinux() -> Iterator[int]:
    """The running kernel's BTF (/sys/kernel/btf/vmlinux) loaded by libbpf, freed on exit;
    raises OSError when the kernel has none."""
    from .elf import libbpf
    lib = libbpf()
    btf = lib.btf__load_vmlinux_btf()
    if not btf:
        err = ctypes.get_errno() or 2
        raise OSError(err, "the kernel has no BTF (/sys/kernel/btf/vmlinux)")
    try:
        yield btf
    finally:
        lib.btf__free(btf)


def enum_members(lib: ctypes.CDLL, btf: int, name: str) -> dict[str, int] | None:
    """The members of `enum name` in a BTF libbpf loaded: {member: value} (None: no such enum)."""
    eid = lib.btf__find_by_name_kind(btf, name.encode(), ENUM)
    if eid <= 0:
        return None
    t = lib.btf__type_by_id(btf, eid)
    vlen = type_words(t, 3)[1] & 0xFFFF
    words = type_words(t + 12, 2 * vlen)
    return {(lib.btf__name_by_offset(btf, words[2 * i]) or b"").decode(): ctypes.c_int32(words[2 * i + 1]).value
            for i in range(vlen)}


def kernel_enum(name: str) -> dict[str, int] | None:
    """The members of the running kernel's `enum name`, from its BTF (None: unknown)."""
    from .elf import libbpf
    try:
        with vmlinux() as btf:
            return enum_members(libbpf(), btf, name)
    except OSError:
        return None


def kernel_helper(name: str) -> bool | None:
    """Does the running kernel have BPF helper `name` (e.g. "xdp_get_buff_len")? From enum
    bpf_func_id in its BTF; None where the kernel has no BTF."""
    helpers = kernel_enum("bpf_func_id")
    return None if helpers is None else f"BPF_FUNC_{name}" in helpers


def _kernel_type(name: str, kind: int, read: Callable[[ctypes.CDLL, int, int], T]) -> T | None:
    """read(libbpf, the running kernel's BTF, the id of `name` of `kind` in it), or None where
    the kernel has no BTF or no such type."""
    from .elf import libbpf
    lib = libbpf()
    try:
        with vmlinux() as btf:
            tid = lib.btf__find_by_name_kind(btf, name.encode(), kind)
            return read(lib, btf, tid) if tid > 0 else None
    except OSError:
        return None


def kernel_function_params(name: str) -> list[str] | None:
    """The parameter names of kernel function `name`, from the running kernel's BTF (None:
    no BTF, or no such function there: inlined, renamed, or not in this kernel)."""
    def params(lib: ctypes.CDLL, btf: int, fid: int) -> list[str]:
        proto = lib.btf__type_by_id(btf, type_words(lib.btf__type_by_id(btf, fid), 3)[2])
        vlen = type_words(proto, 3)[1] & 0xFFFF
        words = type_words(proto + 12, 2 * vlen)        # struct btf_param {name_off, type}
        return [(lib.btf__name_by_offset(btf, words[2 * i]) or b"").decode() for i in range(vlen)]
    return _kernel_type(name, FUNC, params)


def kernel_struct_size(name: str) -> int | None:
    """sizeof(struct `name`) in the running kernel, from its BTF (None: unknown)."""
    return _kernel_type(name, BTF_KIND_STRUCT, lambda lib, btf, tid: type_words(lib.btf__type_by_id(btf, tid), 3)[2])
