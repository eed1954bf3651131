"""A lab for people: built by `python -m lab up`, left running, found again by the other
commands through its state file (/run/xdplab/up/<lab>.json), removed by `down`.

What stays up without a process: the namespaces (bind-mounted under /run/netns), their
veths, the XDP attachments (netlink attachments outlive the process that made them), and
with them the programs and their maps, which later commands open again by id.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import sweep
from .errors import LabError
from .netns import NETNS_RUN_DIR

if TYPE_CHECKING:       # imported where used: `lab down` and `status` need none of them (a command's start)
    from . import bpfsys, xdp
    from .built import Interface, Lab
    from .maps import MapView
    from .spec import LabSpec



State = dict[str, Any]
"""A lab's state file, as JSON reads it (/run/xdplab/up/<lab>.json): name, phase, pid, start,
namespaces, veths, programs, trace_tag."""


def state_dir() -> str:
    from .netns import state_root
    return f"{state_root()}/up"


def _say(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress:
        progress(msg)


def state_path(name: str) -> Path:
    return Path(state_dir()) / f"{name}.json"


def running(directory: str | None = None) -> list[str]:
    """Every lab with a state file (in `directory`, this process's state_dir() by default):
    up, or half-built / half-removed (see `phase`)."""
    try:
        return sorted(p[:-5] for p in os.listdir(directory or state_dir()) if p.endswith(".json"))
    except FileNotFoundError:
        return []


def read_state(name: str) -> State | None:
    """The state of lab `name` (None: no such lab). A state that cannot be read is treated as
    one being written by a live owner: never a reason to delete anything."""
    try:
        state: State = json.loads(state_path(name).read_text())
        return state
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"name": name, "phase": "unreadable", "namespaces": {}}


def owner_alive(state: State) -> bool:
    """Does the process that is changing the lab (building or removing it) still run?"""
    pid, start = state.get("pid"), state.get("start")
    if state.get("phase") == "unreadable":
        return True
    return pid is not None and bool(pid) and sweep.running(int(pid), str(start))


def _write_state(state: State) -> None:
    """Replace the state file atomically (a reader never sees half of it)."""
    os.makedirs(state_dir(), exist_ok=True)
    tmp = f"{state_path(state['name'])}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, state_path(state["name"]))


def _claim(state: State) -> None:
    """Create the state file of a new lab, atomically and only if no lab of that name exists
    (a link fails when the name is taken): two `up`s of one name cannot both proceed."""
    os.makedirs(state_dir(), exist_ok=True)
    tmp = f"{state_path(state['name'])}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(state, indent=2) + "\n")
    try:
        os.link(tmp, state_path(state["name"]))
    except FileExistsError:
        other = read_state(state["name"]) or {}
        raise LabError(f"bring up lab {state['name']}", busy(other),
                       f"take it down first (`python -m lab down --lab {state['name']}`) or use --name") from None
    finally:
        os.unlink(tmp)


def busy(state: State) -> str:
    """Why a lab cannot be used as if it were up, in words."""
    name, phase, pid = state.get("name"), state.get("phase", "up"), state.get("pid")
    if phase == "up":
        return "it is already up"
    verb = {"building": "brought up", "removing": "taken down"}.get(phase, "changed")
    if owner_alive(state):
        return f"lab {name} is being {verb} by pid {pid}"
    return f"lab {name} was left half-{'built' if phase == 'building' else 'removed'}: pid {pid} was killed"


def find(name: str | None) -> State:
    """The state of lab `name`, or of the only lab up; a lab that is not (fully) up raises
    with what to do."""
    labs = running()
    if name is None:
        if len(labs) != 1:
            raise LabError("find the lab", "no lab is up" if not labs else f"{len(labs)} labs are up: {labs}",
                           "start one with `python -m lab up topologies/seed.toml`" if not labs
                           else "name one with --lab NAME")
        name = labs[0]
    state = read_state(name) if name in labs else None
    if state is None:
        raise LabError(f"find lab {name}", "it is not up", f"labs up: {labs or 'none'}; "
                       "start it with `python -m lab up FILE`")
    if state.get("phase", "up") != "up":
        alive = owner_alive(state)
        raise LabError(f"use lab {name}", busy(state),
                       "wait for it to finish" if alive else f"remove what is left: python -m lab down --lab {name}")
    return state


def _resolve(lab: Lab, value: Any) -> Any:       # Any: a TOML value of a lab file, or the interface it names
    """Lab-file values: "ns/if" strings naming an interface of the lab become that interface."""
    if isinstance(value, str) and value in lab.interfaces:
        return lab.interfaces[value]
    if isinstance(value, dict):
        return {k: _resolve(lab, v) for k, v in value.items()}
    return value


def up(file: str, name: str | None = None, progress: Callable[[str], None] | None = None) -> State:
    """Build the lab of `file` and leave it running; returns its state.

    The state file is claimed first (phase "building", this process as owner, every
    namespace it will create), so that a kill at any instant leaves a lab that `down` or
    `clean` can finish removing; it becomes phase "up", owned by nobody, at the end."""
    from dataclasses import asdict

    from . import killpoints, preflight, programs
    from .built import build
    from .errors import TopologyError
    from .names import UpNames
    from .peers import attach_with_peers
    from .spec import load
    from .topology import Topology
    from .trace import new_tag
    spec: LabSpec = load(file)
    labname = spec.name if name is None else name
    try:
        if labname in (".", ".."):
            raise TopologyError("", "", "")
        names = UpNames(labname)
    except TopologyError:
        raise TopologyError(f"name lab {labname!r}", "a lab name is 1-32 letters, digits, '-', '_' or '.' (not "
                            "'.' or '..')", "give another --name (or `name =` in the lab file)") from None
    pid = os.getpid()
    state: State = {
        "name": labname, "phase": "building", "pid": pid, "start": sweep.starttime(pid),
        "file": str(Path(file).resolve()), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "namespaces": {k: names.netns(k) for k in spec.topology.all_namespaces},
        "veths": [[asdict(v.a), asdict(v.b)] for v in spec.topology.veths], "programs": [], "trace_tag": None}
    _claim(state)
    killpoints.reached("up claimed")
    n, v = len(spec.topology.all_namespaces), len(spec.topology.veths)
    _say(progress, f"building {n} namespace{'s' * (n != 1)} and {v} veth pair{'s' * (v != 1)}")
    try:
        # no fates here: this process exits and leaves the lab up (`python -m lab why` watches it)
        lab = build(Topology(spec.topology.veths, spec.topology.namespaces, labname), names, fates="off")
    except BaseException:
        state_path(labname).unlink()
        raise
    killpoints.reached("up built")
    with sweep.pinning_as(f"up-{labname}"):     # the lab's pins, until `down`
        made: list[programs.XdpProgram] = []
        undo: list[Callable[[], None]] = []
        try:
            for p in spec.programs:
                _say(progress, f"loading {p.program} ({p.program.kind})")
                prog = programs.XdpProgram(p.program, use=made[0].use if made and
                                           made[0].program.object_key == p.program.object_key else None)
                made.append(prog)
                for key in p.attach:
                    _say(progress, f"attaching to {key} in {p.mode} mode")
                    att, undone = attach_with_peers(lab, prog, lab.iface(key), p.mode, p.peers)
                    undo.append(undone)
                    killpoints.reached("up attached")
                    state["programs"].append({"program": str(p.program), "attach": key, "mode": p.mode,
                                              "peers": p.peers, "prog_id": att.prog_id})
            for e in spec.entries:
                owner = next((m for m in made if e.map in m.maps), None)
                if owner is None:
                    raise LabError(f"write an entry of map {e.map}", "no program of the lab has that map",
                                   f"use one of {sorted({n for m in made for n in m.maps})}")
                owner.map(e.map).put(_resolve(lab, e.key), _resolve(lab, e.value))
            for m in made:
                if "trace_tag" in m.maps and state["trace_tag"] is None:
                    state["trace_tag"] = new_tag(labname)
                    m.map("trace_tag").put(0, state["trace_tag"])
            for problem in preflight.problems(lab):
                _say(progress, f"warning: frames would vanish: {problem}")
            killpoints.reached("up programmed")
            _write_state({**state, "phase": "up", "pid": None, "start": None})
        except BaseException:
            for m in reversed(made):
                m.close()
            while undo:
                undo.pop()()
            programs.close_objects()
            lab.close()
            sweep.remove_pins(f"{sweep.pin_root()}/up-{labname}")
            state_path(labname).unlink()
            raise
        programs.close_objects(unpin=False)       # the attachments keep programs and maps; pins stay for `down`
        for ns in lab.namespaces.values():      # let go of this process's handles; the lab stays
            ns.release()
    return {**state, "phase": "up", "pid": None, "start": None}


def attach(state: State) -> Lab:
    """A Lab object for a lab that is up (handles only: closing it leaves the lab up)."""
    from . import rtnl
    from .built import Interface, Lab
    from .netns import Netns
    from .topology import End, Topology, Veth
    veths = tuple(Veth(End(**a), End(**b)) for a, b in state["veths"])
    lab = Lab(Topology(veths, name=state["name"]))
    for short, full in state["namespaces"].items():
        lab.namespaces[short] = Netns.open(full)
        lab.on_close(f"release {full}", lab.namespaces[short].release)
    for v in veths:
        for e in (v.a, v.b):
            ns = lab.namespaces[e.ns]
            try:
                index = rtnl.link_index(ns, e.name)
            except rtnl.RtnlError:
                raise LabError(f"find {e.key} in lab {state['name']}", "the interface is gone",
                               "take the lab down and up again") from None
            lab.interfaces[e.key] = Interface(lab, ns, e.ns, e.name, index, e.resolved_mac(),
                                              e.ip.split("/")[0] if e.ip else None)
    return lab


def down(name: str | None, progress: Callable[[str], None] | None = None) -> str:
    """Detach XDP everywhere, delete the namespaces, forget the lab. Also finishes a lab whose
    `up` or `down` was killed part-way (whatever of it exists is removed; the rest is
    skipped); refuses one that a live process is still changing."""
    from . import killpoints, rtnl, xdp
    from .netns import Netns
    if name is None:
        name = find(None)["name"]
    state = read_state(name)
    if state is None:
        raise LabError(f"take lab {name} down", "it is not up", f"labs up: {running() or 'none'}")
    if state.get("phase", "up") != "up" and owner_alive(state) and state.get("pid") != os.getpid():
        raise LabError(f"take lab {name} down", busy(state), "wait for it to finish, or stop that process")
    pid = os.getpid()
    _write_state({**state, "phase": "removing", "pid": pid, "start": sweep.starttime(pid)})
    killpoints.reached("down claimed")
    for full in state.get("namespaces", {}).values():
        path = os.path.join(NETNS_RUN_DIR, full)
        if not os.path.exists(path):
            continue
        try:
            ns = Netns.open(full)
        except (LabError, OSError):
            ns = None                       # a file that was never mounted: removed below
        if ns is not None:
            try:
                for (_f, _t, index, _fl, _c), a in rtnl.dump(ns, rtnl.RTM_GETLINK, rtnl.IFINFOMSG):
                    mode = xdp.ATTACHED_MODES.get(rtnl.xdp_of(a)[0])
                    if mode in xdp.MODES:
                        ifname = a.get(rtnl.IFLA_IFNAME, b"").rstrip(b"\0").decode()
                        _say(progress, f"detaching XDP from {full}/{ifname}")
                        rtnl.set_xdp(ns, index, -1, xdp.MODES[mode])
            except Exception:  # noqa: BLE001 - detaching first is a courtesy: deleting the namespace detaches too
                pass
            finally:
                ns.release()
        _say(progress, f"deleting namespace {full}")
        sweep.remove(full)
        killpoints.reached("down deleted a namespace")
    sweep.remove_pins(f"{sweep.pin_root()}/up-{name}")
    state_path(name).unlink()
    return name


def unfinished() -> list[State]:
    """Labs left half-built or half-removed by a process that is gone (`clean` finishes them)."""
    out = []
    for name in running():
        state = read_state(name)
        if state is not None and state.get("phase", "up") not in ("up", "unreadable") and not owner_alive(state):
            out.append(state)
    return out


def programs_of(lab: Lab) -> list[tuple[Interface, xdp.XdpState, bpfsys.ProgInfo]]:
    """Every XDP program attached in the lab, however it got there: (interface, state, info)."""
    from . import bpfsys, xdp
    out = []
    for i in lab.interfaces.values():
        st = xdp.query(i)
        if st.mode is None:
            continue
        fd = bpfsys.prog_fd_by_id(st.prog_id)
        try:
            out.append((i, st, bpfsys.prog_info(fd)))
        finally:
            os.close(fd)
    return out


def maps_of(lab: Lab) -> dict[str, MapView]:
    """The maps of every program attached in the lab, opened again by id and typed from BTF
    (close their fds with close_maps)."""
    from .btf import Btf
    from .programs import open_maps
    out: dict[str, MapView] = {}
    for _, _, info in programs_of(lab):
        fresh = [i for i in info.map_ids if i not in {m.info.id for m in out.values()}]
        for name, view in open_maps(fresh, Btf.by_id(info.btf_id) if info.btf_id else None).items():
            view.addresses = lab.addresses()
            out[name if name not in out else f"{name}#{view.info.id}"] = view
    return out


def close_maps(maps: dict[str, MapView]) -> None:
    from .programs import close_maps as close
    close(maps)


def dump_json(maps: dict[str, MapView]) -> list[dict[str, Any]]:      # Any: JSON values
    from . import bpfsys
    out = []
    for name, m in maps.items():
        entries = []
        for k, v in m.items():
            if v is None or (m.info.type in bpfsys.ARRAY_TYPES and not any(v)):
                continue
            from .maps import decode, hexbytes
            entries.append({"key": hexbytes(k), "value": hexbytes(v), "key_decoded": m.key_format(k),
                            "value_decoded": decode(m.value_layout, v)})
        out.append({"map": name, "id": m.info.id, "type": m.info.type, "key_size": m.info.key_size,
                    "value_size": m.info.value_size, "max_entries": m.info.max_entries,
                    "layout": m.value_layout.describe(), "entries": entries})
    return out


def status_text(state: State) -> str:
    from . import xdp
    lab = attach(state)
    try:
        lines = [f"lab {state['name']} (up since {state['created']}, from {state['file']})"]
        for i, st, info in programs_of(lab):
            runs = f", ran {info.run_cnt} times" if info.run_cnt else ""
            lines.append(f"program {info.name} (id {info.id}) on {i.key} in {st.mode} mode{runs}")
        for short, ns in lab.namespaces.items():
            lines.append(f"\nnamespace {short} ({ns.name})")
            for key, i in lab.interfaces.items():
                if i.nsname != short:
                    continue
                link = i.ns.ipr.get_links(i.ifindex)[0]
                peer = lab.peer(key)
                lines.append(f"  {i.name}@{peer.key}  ifindex {i.ifindex}  {i.mac}  {i.ip or '-'}  "
                             f"{link.get('IFLA_OPERSTATE')}  mtu {link.get('IFLA_MTU')}  {xdp.query(i)}")
                from .counters import read
                c = read(i)
                lines.append(f"    RX: packets {c['rx_packets']}  bytes {c['rx_bytes']}  dropped {c['rx_dropped']}"
                             f"  errors {c['rx_errors']}")
                lines.append(f"    TX: packets {c['tx_packets']}  bytes {c['tx_bytes']}  dropped {c['tx_dropped']}"
                             f"  errors {c['tx_errors']}")
                extra = {k: v for k, v in c.items() if k.startswith(("rx_queue", "tx_queue")) and v}
                if extra:
                    lines.append("    XDP: " + "  ".join(f"{k} {v}" for k, v in sorted(extra.items())))
        return "\n".join(lines)
    finally:
        lab.close()
