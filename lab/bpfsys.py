"""The few bpf(2) commands the lab needs, called directly through ctypes.

Map access and object info go through the kernel, not through a loader's idea of the
map: what the lab reports is what the kernel holds. Works for any map fd, whoever loaded it.
"""
from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass

_libc = ctypes.CDLL(None, use_errno=True)
_NR_bpf = 321  # x86_64

BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY = 1, 2, 3, 4
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_MAP_UPDATE_BATCH = 26
BPF_PROG_TEST_RUN = 10
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
BPF_BTF_GET_FD_BY_ID = 19
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
BPF_ANY = 0
BPF_PROG_TYPE_XDP = 6
PROG_TYPES = {1: "socket_filter", 2: "kprobe", 3: "sched_cls", 4: "sched_act", 5: "tracepoint", 6: "xdp",
              7: "perf_event", 8: "cgroup_skb", 17: "raw_tracepoint", 26: "tracing", 31: "ext"}

MAP_TYPES = {1: "hash", 2: "array", 3: "prog_array", 4: "perf_event_array", 5: "percpu_hash",
             6: "percpu_array", 9: "lru_hash", 10: "lru_percpu_hash", 11: "lpm_trie", 14: "devmap",
             16: "cpumap", 17: "xskmap", 25: "devmap_hash", 27: "ringbuf"}
INTERFACE_TYPES = {"devmap", "devmap_hash"}
"""Maps whose values are ifindexes, resolved by the kernel in the writer's network namespace."""
PERCPU_TYPES = {"percpu_hash", "percpu_array", "lru_percpu_hash"}
ARRAY_TYPES = {"array", "percpu_array"}
INDEXED = ARRAY_TYPES | {"devmap", "cpumap", "xskmap", "prog_array"}
"""Map types whose keys are the indices 0..max_entries-1, whether an entry is there or not."""


class _ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _BatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64), ("keys", ctypes.c_uint64),
                ("values", ctypes.c_uint64), ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class _MapInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16),
                ("ifindex", ctypes.c_uint32), ("btf_vmlinux_value_type_id", ctypes.c_uint32),
                ("netns_dev", ctypes.c_uint64), ("netns_ino", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
                ("btf_key_type_id", ctypes.c_uint32), ("btf_value_type_id", ctypes.c_uint32)]


class _BtfInfo(ctypes.Structure):
    _fields_ = [("btf", ctypes.c_uint64), ("btf_size", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("name", ctypes.c_uint64), ("name_len", ctypes.c_uint32), ("kernel_btf", ctypes.c_uint32)]


class _TestRunAttr(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32), ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


class _PinAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32), ("file_flags", ctypes.c_uint32)]


class _IdAttr(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


class _ProgInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64),
                ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32), ("gpl_compatible", ctypes.c_uint32),
                ("netns_dev", ctypes.c_uint64), ("netns_ino", ctypes.c_uint64), ("nr_jited_ksyms", ctypes.c_uint32),
                ("nr_jited_func_lens", ctypes.c_uint32), ("jited_ksyms", ctypes.c_uint64),
                ("jited_func_lens", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
                ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
                ("nr_func_info", ctypes.c_uint32), ("nr_line_info", ctypes.c_uint32),
                ("line_info", ctypes.c_uint64), ("jited_line_info", ctypes.c_uint64),
                ("nr_jited_line_info", ctypes.c_uint32), ("line_info_rec_size", ctypes.c_uint32),
                ("jited_line_info_rec_size", ctypes.c_uint32), ("nr_prog_tags", ctypes.c_uint32),
                ("prog_tags", ctypes.c_uint64), ("run_time_ns", ctypes.c_uint64), ("run_cnt", ctypes.c_uint64)]


class _StatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32)]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    ret = _libc.syscall(_NR_bpf, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


@dataclass(frozen=True)
class MapInfo:
    id: int
    type: str
    name: str
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    btf_id: int = 0
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0


@dataclass(frozen=True)
class ProgInfo:
    id: int
    name: str
    tag: str
    map_ids: tuple[int, ...]
    btf_id: int = 0
    type: str = "xdp"
    run_cnt: int = 0
    run_time_ns: int = 0


def map_info(fd: int) -> MapInfo:
    info = _MapInfo()
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(fd, ctypes.sizeof(info), ctypes.addressof(info)))
    return MapInfo(info.id, MAP_TYPES.get(info.type, str(info.type)), info.name.decode(),
                   info.key_size, info.value_size, info.max_entries, info.map_flags,
                   info.btf_id, info.btf_key_type_id, info.btf_value_type_id)


def map_fd_by_id(map_id: int) -> int:
    """An fd of the map with kernel id `map_id` (close it when done)."""
    return _bpf(BPF_MAP_GET_FD_BY_ID, _IdAttr(map_id, 0, 0))


def btf_blob(btf_id: int) -> bytes:
    """The raw BTF (header, types, strings) of the kernel BTF object `btf_id`."""
    fd = _bpf(BPF_BTF_GET_FD_BY_ID, _IdAttr(btf_id, 0, 0))
    try:
        info = _BtfInfo()
        _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(fd, ctypes.sizeof(info), ctypes.addressof(info)))
        buf = ctypes.create_string_buffer(info.btf_size)
        info2 = _BtfInfo(btf=ctypes.addressof(buf), btf_size=info.btf_size)
        _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(fd, ctypes.sizeof(info2), ctypes.addressof(info2)))
        return buf.raw
    finally:
        os.close(fd)


def prog_info(fd: int) -> ProgInfo:
    info = _ProgInfo()
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(fd, ctypes.sizeof(info), ctypes.addressof(info)))
    ids = (ctypes.c_uint32 * info.nr_map_ids)()
    info2 = _ProgInfo(nr_map_ids=info.nr_map_ids, map_ids=ctypes.addressof(ids))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(fd, ctypes.sizeof(info2), ctypes.addressof(info2)))
    return ProgInfo(info.id, info.name.decode(), bytes(info.tag).hex(), tuple(ids), info2.btf_id,
                    PROG_TYPES.get(info2.type, str(info2.type)), info2.run_cnt, info2.run_time_ns)


def prog_xlated(fd: int) -> bytes:
    """The program's instructions as the verifier left them (8 bytes each; what
    `bpftool prog dump xlated` shows)."""
    info = _ProgInfo()
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(fd, ctypes.sizeof(info), ctypes.addressof(info)))
    buf = ctypes.create_string_buffer(info.xlated_prog_len)
    info2 = _ProgInfo(xlated_prog_len=info.xlated_prog_len, xlated_prog_insns=ctypes.addressof(buf))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(fd, ctypes.sizeof(info2), ctypes.addressof(info2)))
    return buf.raw[:info2.xlated_prog_len]


def prog_main_length(fd: int) -> int | None:
    """How many xlated instructions the program's main function has, before its first
    subprogram (None: the program is one function, or carries no BTF function info that
    would say where its subprograms start)."""
    info = _ProgInfo()
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(fd, ctypes.sizeof(info), ctypes.addressof(info)))
    if info.nr_func_info < 2:
        return None
    recs = (ctypes.c_uint32 * (2 * info.nr_func_info))()     # struct bpf_func_info {insn_off, type_id}
    info2 = _ProgInfo(nr_func_info=info.nr_func_info, func_info_rec_size=8, func_info=ctypes.addressof(recs))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(fd, ctypes.sizeof(info2), ctypes.addressof(info2)))
    return int(recs[2])


def returns_constant(insns: bytes, value: int, end: int | None = None) -> int | None:
    """The index of an instruction `r0 = value` from which straight-line code (unconditional
    jumps followed; no call, no other write to r0) reaches `exit`, within the first `end`
    instructions (the main function: a subprogram's `return 3` is not the program's): the
    plain `return XDP_TX;`, or None. Conservative: a verdict that depends on a branch taken
    after it, or computed in another register, is not seen."""
    n = len(insns) // 8 if end is None else min(end, len(insns) // 8)

    def insn(i: int) -> tuple[int, int, int, int]:
        code, regs = insns[8 * i], insns[8 * i + 1]
        return code, regs & 0x0F, int.from_bytes(insns[8 * i + 2:8 * i + 4], "little", signed=True), \
            int.from_bytes(insns[8 * i + 4:8 * i + 8], "little", signed=True)

    for i in range(n):
        code, dst, _, imm = insn(i)
        if code not in (0xB7, 0xB4) or dst != 0 or imm != value:     # BPF_MOV | BPF_K, 64- or 32-bit, into r0
            continue
        j, steps = i + 1, 0
        while 0 <= j < n and steps < 256:
            code, dst, off, _ = insn(j)
            cls = code & 0x07
            if code == 0x95:                                         # exit: r0 is the verdict
                return i
            if code == 0x05:                                         # ja: follow it
                j, steps = j + 1 + off, steps + 1
                continue
            if cls in (0x05, 0x06) or (cls in (0x00, 0x01, 0x04, 0x07) and dst == 0):
                break                                                # a branch, a call, or r0 written
            j, steps = j + (2 if code == 0x18 else 1), steps + 1     # ld_imm64 takes two slots
    return None


def prog_fd_by_id(prog_id: int) -> int:
    """An fd of the program with kernel id `prog_id` (close it when done)."""
    return _bpf(BPF_PROG_GET_FD_BY_ID, _IdAttr(prog_id, 0, 0))


def enable_run_stats() -> int:
    """Turn on the kernel's per-program run count and run time (BPF_ENABLE_STATS) for as long
    as the returned fd is open: reference-counted by the kernel, so other holders and the
    kernel.bpf_stats_enabled sysctl are left alone. Close the fd to stop."""
    return _bpf(BPF_ENABLE_STATS, _StatsAttr(BPF_STATS_RUN_TIME))


def possible_cpus() -> int:
    """Number of possible CPUs: the stride of per-CPU map values."""
    with open("/sys/devices/system/cpu/possible") as f:
        spec = f.read().strip()
    n = 0
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def _elem(fd: int, cmd: int, key: bytes, value: "ctypes.Array[ctypes.c_char] | None" = None, flags: int = 0) -> None:
    kbuf = ctypes.create_string_buffer(key, len(key))
    attr = _ElemAttr(fd, 0, ctypes.addressof(kbuf), ctypes.addressof(value) if value is not None else 0, flags)
    _bpf(cmd, attr)


def lookup(fd: int, key: bytes, value_len: int) -> bytes | None:
    """The value at `key`, or None when there is no entry (ENOENT)."""
    buf = ctypes.create_string_buffer(value_len)
    try:
        _elem(fd, BPF_MAP_LOOKUP_ELEM, key, buf)
    except OSError as e:
        if e.errno == 2:
            return None
        raise
    return buf.raw


def lookup_each(fd: int, keys: list[bytes], value_len: int) -> list[bytes | None]:
    """The value at each of `keys` (all of the map's key size; None: no entry), through one set of buffers and without
    an exception per absent key: the preflight reads whole devmaps before every send."""
    if not keys:
        return []
    size = len(keys[0])
    kbuf, vbuf = ctypes.create_string_buffer(size), ctypes.create_string_buffer(value_len)
    attr = _ElemAttr(fd, 0, ctypes.addressof(kbuf), ctypes.addressof(vbuf), 0)
    call, ref, attr_size = _libc.syscall, ctypes.byref(attr), ctypes.sizeof(attr)
    out: list[bytes | None] = []
    for key in keys:
        ctypes.memmove(kbuf, key, size)
        if call(_NR_bpf, BPF_MAP_LOOKUP_ELEM, ref, attr_size) < 0:
            err = ctypes.get_errno()
            if err != errno.ENOENT:
                raise OSError(err, os.strerror(err))
            out.append(None)
        else:
            out.append(vbuf.raw)
    return out


def update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    _elem(fd, BPF_MAP_UPDATE_ELEM, key, ctypes.create_string_buffer(value, len(value)), flags)


def update_batch(fd: int, keys: bytes, values: bytes, count: int) -> bool:
    """Write `count` entries in one system call (BPF_MAP_UPDATE_BATCH, 5.6+: arrays and
    hashes); False where the kernel or the map type has no batch operations (then write
    them one by one)."""
    kbuf = ctypes.create_string_buffer(keys, len(keys))
    vbuf = ctypes.create_string_buffer(values, len(values))
    attr = _BatchAttr(0, 0, ctypes.addressof(kbuf), ctypes.addressof(vbuf), count, fd, 0, 0)
    try:
        _bpf(BPF_MAP_UPDATE_BATCH, attr)
    except OSError as e:
        if e.errno in (22, 95, 524):        # EINVAL (no such command), EOPNOTSUPP, ENOTSUPP
            return False
        raise
    return bool(attr.count == count)


def delete(fd: int, key: bytes) -> bool:
    """Delete `key`; False when there was no entry."""
    try:
        _elem(fd, BPF_MAP_DELETE_ELEM, key)
    except OSError as e:
        if e.errno == 2:
            return False
        raise
    return True


def keys(fd: int, key_size: int) -> list[bytes]:
    """All keys, in the kernel's iteration order."""
    out: list[bytes] = []
    nxt = ctypes.create_string_buffer(key_size)
    cur: bytes | None = None
    while True:
        kbuf = ctypes.create_string_buffer(cur, key_size) if cur is not None else None
        attr = _ElemAttr(fd, 0, ctypes.addressof(kbuf) if kbuf is not None else 0, ctypes.addressof(nxt), 0)
        try:
            _bpf(BPF_MAP_GET_NEXT_KEY, attr)
        except OSError as e:
            if e.errno == 2:
                return out
            raise
        cur = nxt.raw
        out.append(cur)


def pin(fd: int, path: str) -> None:
    """Pin a program or map at `path` in a bpffs (BPF_OBJ_PIN)."""
    name = ctypes.create_string_buffer(path.encode())
    _bpf(BPF_OBJ_PIN, _PinAttr(ctypes.addressof(name), fd, 0))


def obj_get(path: str) -> int:
    """An fd of the object pinned at `path` (BPF_OBJ_GET; close it when done)."""
    name = ctypes.create_string_buffer(path.encode())
    return _bpf(BPF_OBJ_GET, _PinAttr(ctypes.addressof(name), 0, 0))


def object_of(fd: int) -> tuple[str, int] | None:
    """("map", id), ("prog", id) or ("link", id) of a BPF object's fd, from its fdinfo."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    for kind in ("link", "map", "prog"):        # a link's fdinfo names its program too
        if f"{kind}_id" in fields:
            return kind, int(fields[f"{kind}_id"])
    return None


def test_run(prog_fd: int, frame: bytes) -> tuple[int, bytes]:
    """Run an XDP program once on `frame` (BPF_PROG_TEST_RUN): its return value and the
    frame as it left it. Nothing is transmitted, whatever it returns."""
    data = ctypes.create_string_buffer(frame, len(frame))
    out = ctypes.create_string_buffer(len(frame) + 512)     # room for a program that grows it
    attr = _TestRunAttr(prog_fd=prog_fd, data_size_in=len(frame), data_in=ctypes.addressof(data),
                        data_size_out=len(out), data_out=ctypes.addressof(out), repeat=1)
    _bpf(BPF_PROG_TEST_RUN, attr)
    return attr.retval, out.raw[:attr.data_size_out]


def test_run_live(prog_fd: int, frame: bytes, repeat: int, batch_size: int = 64) -> None:
    """Run an XDP program on `repeat` live copies of `frame` (BPF_F_TEST_XDP_LIVE_FRAMES):
    what it redirects is really transmitted. The calling thread's namespace is the one whose
    loopback device the frames seem to arrive on."""
    data = ctypes.create_string_buffer(frame, len(frame))
    attr = _TestRunAttr(prog_fd=prog_fd, data_size_in=len(frame), data_in=ctypes.addressof(data), repeat=repeat,
                        flags=BPF_F_TEST_XDP_LIVE_FRAMES, batch_size=batch_size)
    _bpf(BPF_PROG_TEST_RUN, attr)
