"""Typed views of BPF maps: keys and values encoded exactly as the C program reads them.

A `Layout` is a C struct with natural alignment (what clang produces for the BPF target):
it packs and unpacks values and describes itself, so that a value of the wrong size is
refused with both layouts named (the seed's 16-byte Go struct against the map's 12 bytes).
"""
from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import bpfsys
from .errors import MapError

if TYPE_CHECKING:
    from .built import Interface

Value = Any
"""What a map key or value is written from and decoded to: ints, interfaces, IPv4 and MAC
strings, bytes, lists for arrays, dicts by field name (encode() says which)."""

_SCALARS = {"u8": ("B", 1), "u16": ("H", 2), "u32": ("I", 4), "u64": ("Q", 8),
            "i8": ("b", 1), "i16": ("h", 2), "i32": ("i", 4), "i64": ("q", 8)}


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str      # "u32", "u8[6]", ...
    offset: int
    size: int

    @property
    def scalar(self) -> str:
        return self.ctype.split("[")[0]

    @property
    def count(self) -> int:
        return int(self.ctype.split("[")[1].rstrip("]")) if "[" in self.ctype else 0


@dataclass(frozen=True)
class Layout:
    """A C struct laid out with natural alignment. Build it with `Layout.c()`."""
    name: str
    fields: tuple[Field, ...]
    size: int

    @classmethod
    def c(cls, name: str, fields: list[tuple[str, str]]) -> "Layout":
        out, off, align = [], 0, 1
        for fname, ctype in fields:
            scalar = ctype.split("[")[0]
            if scalar not in _SCALARS:
                raise MapError(f"declare field {fname} of {name}", f"unknown type {ctype!r}",
                               f"use one of {', '.join(_SCALARS)}, or an array such as u8[6]")
            _, width = _SCALARS[scalar]
            count = int(ctype.split("[")[1].rstrip("]")) if "[" in ctype else 1
            off = (off + width - 1) // width * width
            out.append(Field(fname, ctype, off, width * count))
            off += width * count
            align = max(align, width)
        return cls(name, tuple(out), (off + align - 1) // align * align)

    @classmethod
    def from_ctypes(cls, name: str, ct: Any) -> "Layout":     # Any: a ctypes.Structure subclass (its _fields_)
        """The layout of a ctypes type (bcc derives one per map key and value)."""
        names = {ctypes.c_uint8: "u8", ctypes.c_uint16: "u16", ctypes.c_uint32: "u32", ctypes.c_uint64: "u64",
                 ctypes.c_int8: "i8", ctypes.c_int16: "i16", ctypes.c_int32: "i32", ctypes.c_int64: "i64",
                 ctypes.c_char: "u8", ctypes.c_ubyte: "u8", ctypes.c_byte: "i8"}
        if not hasattr(ct, "_fields_"):
            return cls(name, (Field("value", names.get(ct, f"u8[{ctypes.sizeof(ct)}]"), 0, ctypes.sizeof(ct)),),
                       ctypes.sizeof(ct))
        out = []
        for fname, ftype in ct._fields_:
            if fname.startswith("__pad"):
                continue
            if hasattr(ftype, "_length_"):
                ctype = f"{names.get(ftype._type_, 'u8')}[{ftype._length_}]"
            else:
                ctype = names.get(ftype, f"u8[{ctypes.sizeof(ftype)}]")
            out.append(Field(fname, ctype, getattr(ct, fname).offset, ctypes.sizeof(ftype)))
        return cls(name, tuple(out), ctypes.sizeof(ct))

    @property
    def padding(self) -> int:
        return self.size - sum(f.size for f in self.fields)

    @property
    def is_scalar(self) -> bool:
        return (len(self.fields) == 1 and self.fields[0].name == "value"
                and not self.name.startswith(("struct", "union")))

    def describe(self) -> str:
        if self.is_scalar:
            return f"{self.fields[0].ctype} ({self.size} bytes)"
        body = "; ".join(f"{f.ctype.split('[')[0]} {f.name}{'[' + str(f.count) + ']' if f.count else ''} @{f.offset}"
                         for f in self.fields)
        pad = f", {self.padding} padding" if self.padding else ""
        return f"{self.name} {{ {body}; }} ({self.size} bytes{pad})"

    def differences(self, other: "Layout") -> list[str]:
        """How `other` (a user's layout) differs from this one (the program's): size, and
        each field, taken in order, whose offset or size differs."""
        out = []
        if other.size != self.size:
            out.append(f"size {other.size}, the map's {self.size}")
        for i in range(max(len(self.fields), len(other.fields))):
            mine = self.fields[i] if i < len(self.fields) else None
            theirs = other.fields[i] if i < len(other.fields) else None
            if mine is None:
                if theirs is not None:
                    out.append(f"field {theirs.name} @{theirs.offset} has no counterpart in the map's type")
            elif theirs is None:
                out.append(f"field {mine.name} @{mine.offset} is missing")
            elif (mine.offset, mine.size) != (theirs.offset, theirs.size):
                out.append(f"field {theirs.name} at offset {theirs.offset} ({theirs.size} bytes), the map's "
                           f"{mine.name} at offset {mine.offset} ({mine.size} bytes)")
        return out

    def check(self, other: "Layout", what: str) -> None:
        """Raise MapError naming every difference between a user's layout and this one."""
        diffs = self.differences(other)
        if diffs:
            raise MapError(f"check layout of {what}", f"{other.describe()} differs from the map's "
                           f"{self.describe()}: " + "; ".join(diffs),
                           "lay the control plane's struct out as the C struct (same types, same order)")

    def format(self, raw: bytes) -> str:
        """Decoded fields for people: integers in decimal, u8[6] as a MAC, padding counted."""
        parts = []
        for name, value in self.unpack(raw).items():
            if isinstance(value, bytes):
                value = ":".join(f"{b:02x}" for b in value) if len(value) == 6 else value.hex(" ")
            parts.append(f"{name} {value}" if not self.is_scalar else f"{value}")
        if self.padding:
            parts.append(f"padding {self.padding} bytes")
        return ", ".join(parts)

    def pack(self, **values: Value) -> bytes:
        buf = bytearray(self.size)
        missing = [f.name for f in self.fields if f.name not in values]
        extra = sorted(set(values) - {f.name for f in self.fields})
        if missing or extra:
            raise MapError(f"encode {self.name}", f"missing fields {missing}, unknown fields {extra}",
                           f"give exactly the fields of {self.describe()}")
        for f in self.fields:
            v = values[f.name]
            fmt = "<" + _SCALARS[f.scalar][0]
            try:
                if f.count:
                    items = bytes(v) if f.scalar == "u8" else v
                    if len(items) != f.count:
                        raise ValueError(f"{len(items)} items, field holds {f.count}")
                    for i, item in enumerate(items):
                        struct.pack_into(fmt, buf, f.offset + i * _SCALARS[f.scalar][1], item)
                else:
                    struct.pack_into(fmt, buf, f.offset, v)
            except (struct.error, ValueError, TypeError) as e:
                raise MapError(f"encode field {f.name} of {self.name}", f"{v!r} does not fit {f.ctype}: {e}",
                               "pass a value of the field's type") from None
        return bytes(buf)

    def unpack(self, raw: bytes) -> dict[str, Value]:
        if len(raw) != self.size:
            raise MapError(f"decode {self.name}", f"{len(raw)} bytes, the layout has {self.size}",
                           f"decode with the map's own layout ({self.describe()})")
        out: dict[str, Value] = {}
        for f in self.fields:
            fmt = "<" + _SCALARS[f.scalar][0]
            if f.count:
                if f.scalar == "u8":
                    out[f.name] = raw[f.offset:f.offset + f.size]
                else:
                    w = _SCALARS[f.scalar][1]
                    out[f.name] = [struct.unpack_from(fmt, raw, f.offset + i * w)[0] for i in range(f.count)]
            else:
                out[f.name] = struct.unpack_from(fmt, raw, f.offset)[0]
        return out


_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def _is_iface(v: object) -> bool:
    return hasattr(v, "ifindex") and hasattr(v, "ns") and hasattr(v, "key")


def _exact(raw: bytes | bytearray, size: int, where: str, holds: str, fix: str) -> bytes:
    """Raw bytes given for a field or a whole key/value: exactly `size` of them."""
    if len(raw) != size:
        raise MapError(f"encode {where}", f"{len(raw)} bytes given, {holds}", fix)
    return bytes(raw)


def encode_field(f: Field, v: Value, where: str) -> bytes:
    """One field's bytes from a Python value: an int (as the C type expects, little-endian),
    an Interface (its ifindex), an IPv4 string for a 4-byte field (the 4 bytes in network
    order, as an address sits in a header), a MAC string for a 6-byte array, or raw bytes."""
    if _is_iface(v):
        v = v.ifindex
    if isinstance(v, (bytes, bytearray)):
        return _exact(v, f.size, where, f"{f.ctype} holds {f.size}", f"give exactly {f.size} bytes")
    if isinstance(v, str):
        if f.size == 4 and v.count(".") == 3:
            try:
                return ipaddress.IPv4Address(v).packed
            except ValueError:
                raise MapError(f"encode {where}", f"{v!r} is not an IPv4 address", "write it as 192.168.0.1") from None
        if f.size == 6 and f.scalar == "u8":
            if not _MAC.match(v):
                raise MapError(f"encode {where}", f"{v!r} is not a MAC address", "write it as 02:00:00:00:00:01")
            return bytes.fromhex(v.replace(":", ""))
        raise MapError(f"encode {where}", f"a string ({v!r}) for a field of type {f.ctype}",
                       "give an int" + (", an IPv4 string" if f.size == 4 else "") +
                       (", a MAC string" if f.size == 6 else "") + " or bytes")
    if isinstance(v, bool) or not isinstance(v, int) and not (f.count and isinstance(v, (list, tuple))):
        raise MapError(f"encode {where}", f"{type(v).__name__} {v!r} for a field of type {f.ctype}",
                       "give an int, a string (address) or bytes")
    fmt = "<" + _SCALARS[f.scalar][0]
    buf = bytearray(f.size)
    try:
        if f.count:
            items = list(v) if isinstance(v, (list, tuple)) else None
            if items is None:
                raise MapError(f"encode {where}", f"an int ({v}) for the array {f.ctype}",
                               f"give {f.count} items, bytes" + (" or a MAC string" if f.size == 6 else ""))
            if len(items) != f.count:
                raise MapError(f"encode {where}", f"{len(items)} items, {f.ctype} holds {f.count}",
                               f"give {f.count} items")
            for i, item in enumerate(items):
                struct.pack_into(fmt, buf, i * _SCALARS[f.scalar][1], item)
        else:
            struct.pack_into(fmt, buf, 0, v)
    except struct.error as e:
        raise MapError(f"encode {where}", f"{v!r} does not fit {f.ctype}: {e}",
                       f"give a value in the range of {f.ctype}") from None
    return bytes(buf)


def encode(layout: Layout, value: Value, where: str) -> bytes:
    """A key or value of `layout` from bytes, a scalar (see encode_field) or, for a struct,
    a dict by field name: {"outif": 3, "dst_mac": "00:00:11:22:33:44"}."""
    if isinstance(value, (bytes, bytearray)):
        return _exact(value, layout.size, where, f"{layout.describe()} has {layout.size}",
                      f"give exactly {layout.size} bytes, or the fields by name")
    if isinstance(value, dict):
        names = [f.name for f in layout.fields]
        missing = [n for n in names if n not in value]
        extra = sorted(str(k) for k in value if k not in names)
        if missing or extra:
            raise MapError(f"encode {where}", f"missing fields {missing}, unknown fields {extra}",
                           f"give exactly the fields of {layout.describe()}")
        buf = bytearray(layout.size)
        for f in layout.fields:
            buf[f.offset:f.offset + f.size] = encode_field(f, value[f.name], f"{where} field {f.name}")
        return bytes(buf)
    if len(layout.fields) == 1 and layout.fields[0].offset == 0 and layout.fields[0].size == layout.size:
        return encode_field(layout.fields[0], value, where)
    raise MapError(f"encode {where}", f"{type(value).__name__} {value!r} for {layout.describe()}",
                   "give the fields by name as a dict, or raw bytes")


def decode(layout: Layout, raw: bytes) -> Value:
    """A key or value for people and JSON: a scalar as an int, a struct as a dict by field name;
    6-byte arrays as MAC strings, other byte arrays as hex."""
    def show(v: Value) -> Value:
        if isinstance(v, bytes):
            return ":".join(f"{b:02x}" for b in v) if len(v) == 6 else v.hex(" ")
        return v
    fields = {k: show(v) for k, v in layout.unpack(raw).items()}
    return fields["value"] if layout.is_scalar else fields


def address_note(raw: bytes, addresses: dict[bytes, str]) -> str:
    """What a 4-byte key or field says about the lab's addresses: "192.168.0.1", or that it is
    the byte-swapped form of one (written in host order, where the program reads network order)."""
    if len(raw) != 4:
        return ""
    if raw in addresses:
        return f"= {addresses[raw]} (network order)"
    if raw[::-1] in addresses:
        return (f"BYTE-SWAPPED {addresses[raw[::-1]]}: written in host order, the program compares it with "
                f"the address as it sits in the header ({hexbytes(raw[::-1])})")
    return ""


def hexbytes(raw: bytes) -> str:
    """Bytes as `bpftool map dump` prints them: "07 00 00 00  00 00 11 22"."""
    groups = [" ".join(f"{b:02x}" for b in raw[i:i + 8]) for i in range(0, len(raw), 8)]
    return "  ".join(groups)


_reading: dict[int, list[tuple[bytes, bytes | None]]] | None = None


@contextlib.contextmanager
def one_reading() -> Iterator[None]:
    """Within the block, each map's items() are read from the kernel once and then repeated:
    the preflight's checks (the core's and each kit's) read the same devmaps a moment apart,
    before every send."""
    global _reading
    if _reading is not None:
        yield
        return
    _reading = {}
    try:
        yield
    finally:
        _reading = None


class MapView:
    """A kernel map by fd, with the layouts its program declared for key and value."""

    def __init__(self, fd: int, key: Layout, value: Layout) -> None:
        self.fd = fd
        self.info = bpfsys.map_info(fd)
        self.key_layout, self.value_layout = key, value
        self.key_format = self._key_text      # replaced where a key means more
        self.home: "Interface | None" = None
        """Where the program using this map is attached: interface-valued entries given as
        ifindexes are resolved (and checked) in its namespace."""
        self.addresses: dict[bytes, str] = {}
        """The lab's IPv4 addresses (4 bytes, network order) -> name, to annotate dumps."""
        self.percpu = self.info.type in bpfsys.PERCPU_TYPES
        self.ncpus = bpfsys.possible_cpus() if self.percpu else 1
        self.stride = (self.info.value_size + 7) // 8 * 8 if self.percpu else self.info.value_size

    @property
    def name(self) -> str:
        return self.info.name

    def _key_text(self, raw: bytes) -> str:
        """A key for people: a 4-byte key that holds one of the lab's addresses as it sits in a
        header is shown dotted, anything else by its layout."""
        if len(raw) == 4 and raw in self.addresses:
            return str(ipaddress.IPv4Address(raw))
        return self.key_layout.format(raw)

    def _check(self, what: str, raw: bytes, size: int, layout: Layout, given: Layout | None, op: str) -> None:
        if len(raw) != size:
            mine = f" ({given.describe()})" if given else ""
            raise MapError(f"{op} {self.name}", f"{what} is {len(raw)} bytes{mine}, the map's {what} is "
                           f"{size} bytes ({layout.describe()})",
                           f"lay the {what} out as the map's struct (e.g. u32, not a 64-bit int, for a C u32)")

    def update(self, key: bytes, value: bytes, *, value_layout: Layout | None = None,
               key_layout: Layout | None = None) -> None:
        """Write raw bytes; refuses a key or value whose size is not the map's."""
        self._check("key", key, self.info.key_size, self.key_layout, key_layout, "update")
        self._check("value", value, self.info.value_size, self.value_layout, value_layout, "update")
        if self.info.type in ("devmap", "xskmap", "array", "percpu_array", "prog_array"):
            index = int.from_bytes(key, "little")
            if index >= self.info.max_entries:
                raise MapError(f"update {self.name}[{index}]", f"index {index} is out of range: the map has "
                               f"{self.info.max_entries} entries (0..{self.info.max_entries - 1})",
                               "use a smaller index, or give the map more entries in the C source")
        if self.percpu:
            value = b"".join(value.ljust(self.stride, b"\0") for _ in range(self.ncpus))
        try:
            bpfsys.update(self.fd, key, value)
        except OSError as e:
            raise MapError(f"update {self.name}[{hexbytes(key)}]", e.strerror or str(e),
                           "check the key and value against `bpftool map dump`", errno=e.errno) from None

    # by field name ---------------------------------------------------------------------
    @property
    def holds_interfaces(self) -> bool:
        return self.info.type in bpfsys.INTERFACE_TYPES

    def _writer(self, value: Value) -> contextlib.AbstractContextManager[None]:
        """The namespace an interface-valued entry must be written from (the kernel resolves
        a devmap's ifindex in the writer's namespace): the named interface's own, or, for a
        bare ifindex, the namespace of the program that uses the map, after checking that
        the ifindex names an interface there."""
        if not self.holds_interfaces:
            return contextlib.nullcontext()
        if isinstance(value, dict):
            value = value.get("ifindex", next(iter(value.values()), None))
        if _is_iface(value):
            iface: "Interface" = value
            return iface.ns.entered()
        index = int.from_bytes(value, "little") if isinstance(value, (bytes, bytearray)) else value
        if self.home is None:
            raise MapError(f"update {self.name} with ifindex {index}", "the map names interfaces, and no program "
                           "using it is attached, so the namespace that ifindex belongs to is unknown",
                           "give the interface itself (lab.iface('ns/if')), or attach the program first")
        home = self.home
        from . import rtnl
        if not isinstance(index, int) or index not in {h[2] for h, _ in rtnl.dump(home.ns, rtnl.RTM_GETLINK,
                                                                                    rtnl.IFINFOMSG)}:
            raise MapError(f"update {self.name} with ifindex {index}",
                           f"no interface of namespace {home.nsname} (where the program runs) has that ifindex",
                           f"give the interface itself (lab.iface('ns/if')); {home.nsname} has "
                           + ", ".join(f"{i.name}={i.ifindex}" for i in home.lab.interfaces.values()
                                       if i.ns is home.ns))
        return home.ns.entered()

    def put(self, key: Value, value: Value) -> None:
        """Write one entry by value: ints, interfaces, IPv4 and MAC strings, dicts by field name
        (see encode()). Interface-valued maps are written from the right namespace."""
        raw_key = encode(self.key_layout, key, f"key of {self.name}")
        raw_value = encode(self.value_layout, value, f"value of {self.name}")
        with self._writer(value):
            self.update(raw_key, raw_value)

    def get(self, key: Value) -> Value:
        """The decoded value at `key` (None: no entry); per-CPU integer values summed."""
        raw_key = encode(self.key_layout, key, f"key of {self.name}")
        raw = self.sum_percpu(raw_key) if self.percpu else self.lookup(raw_key)
        return None if raw is None else decode(self.value_layout, raw)

    def entries(self) -> dict[Value, Value]:
        """Every entry decoded (arrays: the non-zero ones); keys that are dicts become tuples."""
        out: dict[Value, Value] = {}
        for k, v in self.items():
            if v is None or (self.info.type in bpfsys.ARRAY_TYPES and not any(v)):
                continue
            key = decode(self.key_layout, k)
            out[tuple(key.values()) if isinstance(key, dict) else key] = decode(self.value_layout, v)
        return out

    def lookup(self, key: bytes) -> bytes | None:
        """The value at `key` (None: no entry). Per-CPU maps have one value per CPU:
        use lookup_percpu()."""
        if self.percpu:
            raise MapError(f"look up {self.name}", "a per-CPU map has one value per CPU",
                           "use lookup_percpu()")
        return bpfsys.lookup(self.fd, key, self.info.value_size)

    def lookup_percpu(self, key: bytes) -> list[bytes] | None:
        raw = bpfsys.lookup(self.fd, key, self.stride * self.ncpus)
        if raw is None:
            return None
        return [raw[i * self.stride:i * self.stride + self.info.value_size] for i in range(self.ncpus)]

    def delete(self, key: bytes) -> bool:
        return bpfsys.delete(self.fd, key)

    def keys(self) -> list[bytes]:
        """Every key: for an array-like map, each index below max_entries (what GET_NEXT_KEY
        walks, without the syscall per key: the preflight reads devmaps before every send)."""
        if self.info.type in bpfsys.INDEXED and self.info.key_size == 4:
            return [i.to_bytes(4, "little") for i in range(self.info.max_entries)]
        return bpfsys.keys(self.fd, self.info.key_size)

    @property
    def readable(self) -> bool:
        """False for maps whose values user space cannot read (xskmap: EOPNOTSUPP)."""
        return self.info.type != "xskmap"

    def items(self) -> list[tuple[bytes, bytes | None]]:
        """(key, value) for every key; value None where the kernel reports no entry."""
        if _reading is not None:
            if self.info.id not in _reading:
                _reading[self.info.id] = self._items()
            return _reading[self.info.id]
        return self._items()

    def _items(self) -> list[tuple[bytes, bytes | None]]:
        if not self.readable:
            return [(k, None) for k in self.keys()]
        if self.percpu:
            return [(k, self.sum_percpu(k)) for k in self.keys()]
        keys = self.keys()
        return list(zip(keys, bpfsys.lookup_each(self.fd, keys, self.info.value_size)))

    def sum_percpu(self, key: bytes) -> bytes | None:
        """A per-CPU integer value summed over CPUs (how counters are read)."""
        values = self.lookup_percpu(key)
        if values is None:
            return None
        total = sum(int.from_bytes(v, "little") for v in values)
        return (total & ((1 << (8 * self.info.value_size)) - 1)).to_bytes(self.info.value_size, "little")

    def clear(self) -> None:
        """Empty the map: delete every entry, or zero it for arrays (which cannot delete)."""
        if self.info.type in bpfsys.ARRAY_TYPES:      # keys 0..max_entries-1: no need to list them
            n, zero = self.info.max_entries, bytes(self.stride * self.ncpus)
            keys = [i.to_bytes(4, "little") for i in range(n)]
            if not bpfsys.update_batch(self.fd, b"".join(keys), zero * n, n):
                for k in keys:
                    bpfsys.update(self.fd, k, zero)
        else:
            for k in self.keys():
                bpfsys.delete(self.fd, k)

    def dump(self) -> str:
        """The map as `bpftool map dump` prints it, plus decoded fields."""
        lines = [f"{self.info.id}: {self.info.type}  name {self.name}  key {self.info.key_size}B  "
                 f"value {self.info.value_size}B  max_entries {self.info.max_entries}"]
        n = 0
        for k, v in self.items():
            if v is None:
                continue
            if self.info.type in bpfsys.ARRAY_TYPES and not any(v):
                continue
            n += 1
            lines.append(f"key: {hexbytes(k)}  value{' (sum over CPUs)' if self.percpu else ''}: {hexbytes(v)}")
            try:
                lines.append(f"       {self.key_format(k)} -> {self.value_layout.format(v)}")
            except MapError:
                pass
            note = address_note(k, self.addresses)
            if note:
                lines.append(f"       key {note}")
        if not self.readable:
            lines.append(f"(values of a {self.info.type} cannot be read from user space)")
        lines.append(f"Found {n} element{'s' if n != 1 else ''}")
        return "\n".join(lines)
