"""`python -m lab bench`: what the lab costs and what a forwarder does, on this machine.

Each figure is the median of several repetitions. Rates that Python cannot reach are
measured with frames generated in the kernel: an XDP program run by BPF_PROG_TEST_RUN with
BPF_F_TEST_XDP_LIVE_FRAMES (xdp-trafficgen's method) redirects copies of a frame out of
net1/veth1, through the forwarder, and they are counted at the far end (net2/veth3, which
drops them in XDP, the cheapest sink).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import bpfsys, ethtool, fates, xdp
from ..bccload import BccObject
from ..built import Lab, build
from ..counters import read
from ..dataplane import Capture, Port
from ..packets import udp_frame
from ..plugin import PHASES_ENV
from ..pool import Pool
from ..programs import PACKAGE_BPF, Program, XdpProgram, program_fd
from ..topology import End, Topology, Veth
from ..xdp import Attachment
from .forwarder import L2FWD
from .repro import l2fwd_on
from .seed import ROUTED, SEED, SEED_MAC, seed_frame

ROOT = PACKAGE_BPF.parent
XDP_DROP = Program(PACKAGE_BPF / "xdp_drop.c", "xdp_drop")
XDP_GEN = Program(PACKAGE_BPF / "xdp_gen.c", "xdp_gen")
SIZES = (64, 512, 1500)
PAIR = Topology((Veth(End("net1", "veth1", "02:00:00:00:01:02", "192.168.1.2/24"),
                      End("fwd", "veth0", "02:00:00:00:01:01", "192.168.1.1/24")),), name="bench-pair")

KEYS = ("lab_setup_ms", "lab_fresh_setup_ms", "lab_reuse_ms", "ip_script_ms", "cli_updown_ms", "python_start_ms",
        "compile_ms", "attach_ms", "attach_parked_ms", "inject_pps",
        "scapy_sendp_pps", "capture_pps", "capture_drops", "fwd_mpps_skb", "fwd_mpps_drv", "drop_mpps",
        "fates_overhead_pct", "suite_serial_s", "suite_parallel_s", "scenario_median_ms", "scenario_p95_ms")
# the two-namespace lab of cli_updown_ms: the shape of xdp-tutorial's `testenv.sh setup`
UPDOWN_LAB = """name = "bench-updown"
[[veth]]
a = { ns = "h1", name = "veth1", mac = "02:00:0a:00:00:01", ip = "10.0.0.1/24" }
b = { ns = "h2", name = "veth2", mac = "02:00:0a:00:00:02", ip = "10.0.0.2/24" }
"""


Results = dict[str, Any]
"""The bench's figures by key, as docs/bench.json holds them (JSON values)."""


def median_of(reps: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(reps))


def progress(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


# --- the harness's own overhead -------------------------------------------------------------

def lab_fresh_setup_ms() -> float:
    """A scenario's lab built for it alone: build, attach, route, detach, close."""
    t = time.perf_counter()
    with build(SEED) as lab, l2fwd_on(lab, "skb", "none") as f:
        f.route(ROUTED, via=lab.iface("fwd/veth2"), mac=SEED_MAC)
    return (time.perf_counter() - t) * 1e3


def lab_setup_ms(pool: Pool) -> float:
    """A scenario's lab as the `lab` fixture gives it (reuse on): taken from the pool (built
    the first time), attach, route, detach, reset, checked and given back."""
    t = time.perf_counter()
    lab = pool.take(SEED, "on")
    try:
        with l2fwd_on(lab, "skb", "none") as f:
            f.route(ROUTED, via=lab.iface("fwd/veth2"), mac=SEED_MAC)
    finally:
        left = pool.give_back(lab)
    if left:
        raise RuntimeError(f"bench: the seed lab was left changed: {left}")
    return (time.perf_counter() - t) * 1e3


def lab_reuse_ms(pool: Pool, frames: int) -> float:
    """The price of reuse alone (Lab.checked_ms): after a forwarding test (attach, route,
    frames through, detach), the wait for the kernel, the flush, the fates afresh, the
    reading of every namespace and the comparison."""
    lab = pool.take(SEED, "on")
    try:
        with l2fwd_on(lab, "drv", "pass") as f:
            f.route(ROUTED, via=lab.iface("fwd/veth2"), mac=SEED_MAC)
            lab.port("net1/veth1").send(seed_frame(lab), count=frames)
    finally:
        left = pool.give_back(lab)
    if left:
        raise RuntimeError(f"bench: the seed lab was left changed: {left}")
    return lab.checked_ms


def ip_script_ms(pin_dir: str) -> float:
    """The same lab as separate `ip`/`bpftool` processes, as shell-based labs build it: the
    program is already loaded and pinned (as lab_setup_ms reuses the compiled one)."""
    tag = f"xdplab-bench{os.getpid()}"
    f, n1, n2 = f"{tag}-fwd", f"{tag}-net1", f"{tag}-net2"
    cmds = [["ip", "netns", "add", ns] for ns in (n1, f, n2)] + [
        ["ip", "-n", f, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", n1],
        ["ip", "-n", f, "link", "add", "veth2", "type", "veth", "peer", "name", "veth3", "netns", n2],
        ["ip", "-n", n1, "addr", "add", "192.168.1.2/24", "dev", "veth1"],
        ["ip", "-n", f, "addr", "add", "192.168.1.1/24", "dev", "veth0"],
        ["ip", "-n", f, "addr", "add", "192.168.0.254/24", "dev", "veth2"],
        ["ip", "-n", n2, "addr", "add", "192.168.0.1/24", "dev", "veth3"],
        ["ip", "-n", n1, "link", "set", "veth1", "up"], ["ip", "-n", f, "link", "set", "veth0", "up"],
        ["ip", "-n", f, "link", "set", "veth2", "up"], ["ip", "-n", n2, "link", "set", "veth3", "up"],
        ["ip", "-n", f, "link", "set", "dev", "veth0", "xdpgeneric", "pinned", f"{pin_dir}/prog"],
        # a devmap resolves ifindexes in the writer's namespace: bpftool must run inside fwd
        ["ip", "netns", "exec", f, "bpftool", "map", "update", "pinned", f"{pin_dir}/txport_map",
         "key", "3", "0", "0", "0", "value", "3", "0", "0", "0"],
        ["bpftool", "map", "update", "pinned", f"{pin_dir}/l2fwd_map", "key", "192", "168", "0", "1",
         "value", "3", "0", "0", "0", "0", "0", "0x11", "0x22", "0x33", "0x44", "0", "0"],
        ["ip", "-n", f, "link", "set", "dev", "veth0", "xdpgeneric", "off"],
    ] + [["ip", "netns", "del", ns] for ns in (n2, f, n1)]
    t = time.perf_counter()
    try:
        for c in cmds:
            subprocess.run(c, check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        for ns in (n2, f, n1):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        raise RuntimeError(f"bench: {' '.join(e.cmd)} failed: {e.stderr.decode().strip()}") from None
    return (time.perf_counter() - t) * 1e3


def compile_ms() -> float:
    t = time.perf_counter()
    c = BccObject(L2FWD.source, L2FWD.cflags)
    c.load("xdp_l2fwd")
    ms = (time.perf_counter() - t) * 1e3
    c.close()
    return ms


def attach_ms(lab: Lab, fd: int) -> float:
    veth0 = lab.iface("fwd/veth0")
    t = time.perf_counter()
    a = Attachment(veth0, fd, "drv", "xdp_drop")
    ms = (time.perf_counter() - t) * 1e3
    a.close()
    return ms


# --- frames from Python -------------------------------------------------------------------

def inject_pps(lab: Lab, frames: int) -> float:
    port = Port(lab.iface("net1/veth1"))
    frame = bytes(seed_frame(lab))
    try:
        t = time.perf_counter()
        port.send(frame, count=frames)
        return frames / (time.perf_counter() - t)
    finally:
        port.close()


def scapy_sendp_pps(lab: Lab, frames: int) -> float:
    """scapy's sendp() of the same frame, imported and run inside net1 (`ip netns exec`),
    which is how scapy-based harnesses send from a namespace."""
    code = ("import sys, time\nfrom scapy.all import Ether, sendp\n"
            f"f = Ether(bytes.fromhex('{bytes(seed_frame(lab)).hex()}'))\n"
            f"t = time.perf_counter(); sendp(f, iface='veth1', count={frames}, verbose=False)\n"
            f"print({frames} / (time.perf_counter() - t))\n")
    r = subprocess.run(["ip", "netns", "exec", lab.ns("net1").name, sys.executable, "-c", code],
                       check=True, capture_output=True, text=True)
    return float(r.stdout.split()[-1])


def capture_burst(lab: Lab, frames: int) -> tuple[float, int]:
    """A 100,000-frame burst at inject_pps into a capture: (frames/s taken in, frames lost)."""
    cap = Capture(lab.iface("fwd/veth0"), rcvbuf=512 << 20)
    port = Port(lab.iface("net1/veth1"))
    try:
        t = time.perf_counter()
        port.send(bytes(seed_frame(lab, "192.168.1.1")), count=frames)
        deadline = time.monotonic() + 30
        while len(cap.received) + cap.drops < frames and time.monotonic() < deadline:
            cap.poll(0.01)
        return len(cap.received) / (time.perf_counter() - t), cap.drops
    finally:
        port.close()
        cap.close()


# --- frames from the kernel ----------------------------------------------------------------

def padded(size: int) -> bytes:
    base = bytes(udp_frame(eth_src="02:00:00:00:01:02", eth_dst="02:00:00:00:01:01", ip_dst=ROUTED,
                           payload=b""))
    return bytes(udp_frame(eth_src="02:00:00:00:01:02", eth_dst="02:00:00:00:01:01", ip_dst=ROUTED,
                           payload=b"\0" * (size - len(base))))


def generate(lab: Lab, gen: XdpProgram, frame: bytes, repeat: int, sink: str, counter: str) -> float:
    """Mpps counted at `sink` (an interface key) while the generator sends `repeat` frames."""
    iface = lab.iface(sink)
    before = read(iface)[counter]
    with lab.ns("net1").entered():
        t = time.perf_counter()
        bpfsys.test_run_live(gen.fd, frame, repeat)
        elapsed = time.perf_counter() - t
    deadline = time.monotonic() + 2
    while True:       # the last batch may still be on its way
        after = read(iface)[counter]
        if after - before >= repeat or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return (after - before) / elapsed / 1e6


def kernel_rates(repeat: int, reps: int) -> dict[str, dict[int, float]]:
    """Mpps for each mode and frame size, and the XDP_DROP ceiling on veth0."""
    out: dict[str, dict[int, float]] = {"skb": {}, "drv": {}, "drop": {}}
    gen = XdpProgram(XDP_GEN)
    sink = XdpProgram(XDP_DROP)
    try:
        for mode in ("skb", "drv"):
            with build(SEED) as lab, l2fwd_on(lab, mode, "none") as f:
                gen.map("gen_target").put(0, lab.iface("net1/veth1"))    # written from net1: its ifindex there
                f.route(ROUTED, via=lab.iface("fwd/veth2"), mac=SEED_MAC)
                sink.attach(lab.iface("net2/veth3"), "drv")           # far end: counted, then dropped
                if mode == "skb":     # the generator's xdp_frames need NAPI on veth0: GRO turns it on
                    ethtool.set_gro(lab.iface("fwd/veth0"), True)
                for size in SIZES:
                    out[mode][size] = median_of(reps, lambda: generate(lab, gen, padded(size), repeat, "net2/veth3",
                                                                       "rx_queue_0_xdp_packets"))
                sink.close()
        with build(PAIR) as lab:
            sink.attach(lab.iface("fwd/veth0"), "drv")
            for size in SIZES:
                out["drop"][size] = median_of(reps, lambda: generate(lab, gen, padded(size), repeat, "fwd/veth0",
                                                                     "rx_queue_0_xdp_drops"))
            sink.close()
    finally:
        sink.close()
        gen.close()
    return out


def fates_overhead_pct(repeat: int) -> tuple[float, float, float]:
    """Forwarding Mpps (drv, 64 bytes, one run each) with no fates recorder loaded at all,
    then with the lab's fates recorded; returns (off, on, overhead in percent)."""
    gen, sink = XdpProgram(XDP_GEN), XdpProgram(XDP_DROP)
    rates = []
    try:
        gen.map("gen_target").update(bytes(4), (2).to_bytes(4, "little"))
        for on in (False, True):
            if not on:
                fates.close()
            with build(SEED, fates="on" if on else "off") as lab, l2fwd_on(lab, "drv", "none") as f:
                f.route(ROUTED, via=lab.iface("fwd/veth2"), mac=SEED_MAC)
                sink.attach(lab.iface("net2/veth3"), "drv")
                generate(lab, gen, padded(64), repeat // 10, "net2/veth3", "rx_queue_0_xdp_packets")   # warm-up
                rates.append(generate(lab, gen, padded(64), repeat, "net2/veth3", "rx_queue_0_xdp_packets"))
                sink.close()
    finally:
        sink.close()
        gen.close()
    off, on_ = rates
    return off, on_, 100 * (off - on_) / off


def cli_updown_ms(lab_file: str) -> float:
    """`python -m lab up FILE` + `python -m lab down`, as a user types them: whole processes."""
    t = time.perf_counter()
    for args in (["up", lab_file], ["down", "--lab", "bench-updown"]):
        r = subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, capture_output=True, text=True,
                           env=_child_env())
        if r.returncode != 0:
            subprocess.run([sys.executable, "-m", "lab", "down", "--lab", "bench-updown"], cwd=ROOT,
                           capture_output=True, env=_child_env())
            raise RuntimeError(f"bench: python -m lab {' '.join(args)} failed: {r.stderr.strip()}")
    return (time.perf_counter() - t) * 1e3


def python_start_ms() -> float:
    """`python -c pass`: what each command pays before the lab's first line (site-packages
    and their .pth files included), twice in cli_updown_ms."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, env=_child_env())
    return (time.perf_counter() - t) * 1e3


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("XDPLAB_RUN", "PYTEST_XDIST_WORKER")}


def suite_s(parallel: bool, suite: list[str], junit: str | None = None, phases: str | None = None) -> float:
    args = [sys.executable, "-m", "pytest", "-q", *suite, *(["-n", "2"] if parallel else ["-n0"]),
            *([f"--junitxml={junit}"] if junit else [])]
    env = _child_env()
    if phases:
        env[PHASES_ENV] = phases
    t = time.perf_counter()
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"bench: the scenario suite failed:\n{r.stdout[-2000:]}")
    return time.perf_counter() - t


def make_test_s() -> float:
    """The whole of `make test` after its set-up: its pytest over tests/ with one worker more
    than CPUs (the Makefile's TEST_WORKERS), the scenario suite run twice inside it."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", str((os.cpu_count() or 1) + 1), "-q", "tests/"],
                       cwd=ROOT, capture_output=True, text=True, env=_child_env())
    if r.returncode != 0:
        raise RuntimeError(f"bench: make test's pytest failed:\n{r.stdout[-2000:]}")
    return time.perf_counter() - t


def scenario_ms(junit: str) -> list[float]:
    """Each scenario's setup + call + teardown (pytest's JUnit `time`), in ms, sorted."""
    import xml.etree.ElementTree as ET
    return sorted(float(c.get("time", "0")) * 1e3 for c in ET.parse(junit).getroot().iter("testcase"))


PHASES = ("build", "set-up", "send", "settle", "call", "close", "teardown")


def scenario_phases(path: str) -> dict[str, float]:
    """Where a scenario's time goes, the median of each phase over the suite ($XDPLAB_PHASES
    lines): the lab's build, the rest of the set-up (compiles, attaches), sends (preflight
    included), waits for the kernel to finish, the rest of the test, the lab's close, the
    rest of the teardown (detaches, maps emptied)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        ms = json.loads(line)["ms"]
        rows.append({"build": ms.get("build", 0.0), "set-up": ms["setup"] - ms.get("build", 0.0),
                     "send": ms["send"], "settle": ms["settle"],
                     "call": max(0.0, ms["call"] - ms["send"] - ms["settle"]), "close": ms.get("close", 0.0),
                     "teardown": ms["teardown"] - ms.get("close", 0.0)})
    return {k: round(statistics.median(r[k] for r in rows), 1) for k in PHASES}


# --- the run -----------------------------------------------------------------------------------

def run(quick: bool, suite: list[str] | None = None, smoke: bool = False) -> Results:
    """Every figure: `quick` with fewer repetitions and frames, `smoke` (the bench's own test)
    with one repetition and a tenth of quick's frames: numbers, not measurements."""
    suite = suite or ["scenarios/"]
    quick = quick or smoke
    reps = 1 if smoke else 3 if quick else 9
    k = 10 if smoke else 1          # frame counts are divided by it
    res: Results = {}
    program_fd(L2FWD)             # warm the cache: lab_setup_ms attaches "from the compile cache"
    progress("lab set-up against an ip/bpftool script")
    res["lab_fresh_setup_ms"] = median_of(reps, lab_fresh_setup_ms)
    pool = Pool()
    xdp.park_programs()                     # as the lab fixture does (xdp.Parking)
    try:
        lab_setup_ms(pool)                  # the first builds the lab the others reuse
        res["lab_setup_ms"] = median_of(reps, lambda: lab_setup_ms(pool))
        res["lab_reuse_ms"] = median_of(reps * 3, lambda: lab_reuse_ms(pool, 1000 // k))
    finally:
        pool.close()
        xdp.unpark_programs()
    # `ip -n` remounts /sys, hiding /sys/fs/bpf: pin in a bpffs of our own, outside /sys
    os.makedirs("/run/xdplab", exist_ok=True)
    pin_dir = tempfile.mkdtemp(prefix="bench-bpffs-", dir="/run/xdplab")
    subprocess.run(["mount", "-t", "bpf", "bpf", pin_dir], check=True)
    try:
        c = XdpProgram(L2FWD)
        bpfsys.pin(c.fd, f"{pin_dir}/prog")
        for m in ("l2fwd_map", "txport_map"):
            bpfsys.pin(c.maps[m].fd, f"{pin_dir}/{m}")
        c.close()
        res["ip_script_ms"] = median_of(reps, lambda: ip_script_ms(pin_dir))
    finally:
        subprocess.run(["umount", pin_dir], check=False)
        os.rmdir(pin_dir)
    progress("lab up + lab down as commands")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "updown.toml").write_text(UPDOWN_LAB)
        res["cli_updown_ms"] = median_of(reps, lambda: cli_updown_ms(str(Path(d) / "updown.toml")))
    res["python_start_ms"] = median_of(reps, python_start_ms)
    progress("compile and attach")
    res["compile_ms"] = median_of(1 if quick else 3, compile_ms)
    drop = XdpProgram(XDP_DROP)
    try:
        with build(PAIR) as lab:
            res["attach_ms"] = median_of(reps * 3, lambda: attach_ms(lab, drop.fd))
            xdp.park_programs()             # the same attach, the program parked (xdp.Parking)
            try:
                xdp.park(drop.fd, drop.info.id)
                res["attach_parked_ms"] = median_of(reps * 3, lambda: attach_ms(lab, drop.fd))
            finally:
                xdp.unpark_programs()
            progress("frames from Python")
            drop.attach(lab.iface("fwd/veth0"), "drv")
            res["inject_pps"] = median_of(reps, lambda: inject_pps(lab, (100_000 if quick else 300_000) // k))
            res["scapy_sendp_pps"] = median_of(reps, lambda: scapy_sendp_pps(lab, (2_000 if quick else 10_000) // k))
            drop.close()
            rates = [capture_burst(lab, 100_000 // k) for _ in range(reps)]
            res["capture_pps"] = statistics.median(r[0] for r in rates)
            res["capture_drops"] = max(r[1] for r in rates)
    finally:
        drop.close()
    progress("frames from the kernel (BPF_PROG_TEST_RUN, live frames)")
    by_size = kernel_rates((300_000 if quick else 2_000_000) // k, reps)
    res["fwd_mpps_skb"], res["fwd_mpps_drv"], res["drop_mpps"] = (by_size[m][64] for m in ("skb", "drv", "drop"))
    res["by_size"] = {m: {str(s): v for s, v in sizes.items()} for m, sizes in by_size.items()}
    progress("forwarding with the lab's fates recorded, against no recorder at all")
    # one off/on pair varies by +-6 points here: the median of `reps` pairs
    pairs = [fates_overhead_pct((300_000 if quick else 2_000_000) // k) for _ in range(reps)]
    res["fwd_mpps_drv_fates_off"] = statistics.median(p[0] for p in pairs)
    res["fwd_mpps_drv_fates_on"] = statistics.median(p[1] for p in pairs)
    res["fates_overhead_pct"] = statistics.median(p[2] for p in pairs)
    progress("the scenario suite, serial and -n 2")
    with tempfile.TemporaryDirectory() as d:      # each scenario's time, from the first serial run
        junit, phases = str(Path(d) / "serial.xml"), str(Path(d) / "phases.jsonl")
        serial = [suite_s(False, suite, junit, phases)] + [suite_s(False, suite) for _ in range(0 if quick else 2)]
        per_scenario = scenario_ms(junit)
        res["scenario_phases_ms"] = scenario_phases(phases)
    res["suite_serial_s"] = statistics.median(serial)
    res["scenario_median_ms"] = statistics.median(per_scenario)
    res["scenario_p95_ms"] = per_scenario[min(len(per_scenario) - 1, int(0.95 * len(per_scenario)))]
    res["suite_parallel_s"] = median_of(1 if quick else 3, lambda: suite_s(True, suite))
    if not quick:       # a full run only: it is `make test`'s own pytest (a quick run is one of make test's checks)
        progress("make test's pytest (-n auto), set-up done")
        res["make_test_s"] = make_test_s()
    res["machine"] = {"cores": os.cpu_count(), "kernel": platform.release(), "quick": quick, "smoke": smoke,
                      "date": time.strftime("%Y-%m-%d"), "suite": suite}
    res["targets"] = targets(res)
    return res


def targets(r: Results) -> dict[str, bool]:
    return {
        "lab_setup_ms <= 0.5 * ip_script_ms": r["lab_setup_ms"] <= 0.5 * r["ip_script_ms"],
        "lab_reuse_ms <= 5": r["lab_reuse_ms"] <= 5,
        "inject_pps >= 200000": r["inject_pps"] >= 200_000,
        "inject_pps >= 100 * scapy_sendp_pps": r["inject_pps"] >= 100 * r["scapy_sendp_pps"],
        "capture_drops == 0": r["capture_drops"] == 0,
        "fwd_mpps_drv >= 0.5 * drop_mpps": r["fwd_mpps_drv"] >= 0.5 * r["drop_mpps"],
        "fates_overhead_pct < 10": r["fates_overhead_pct"] < 10,
        "suite_parallel_s <= 0.6 * suite_serial_s": r["suite_parallel_s"] <= 0.6 * r["suite_serial_s"],
        "scenario_median_ms <= ip_script_ms": r["scenario_median_ms"] <= r["ip_script_ms"],
        "scenario_p95_ms <= 250": r["scenario_p95_ms"] <= 250,
        "cli_updown_ms <= 200": r["cli_updown_ms"] <= 200,
        **({"make_test_s <= 90": r["make_test_s"] <= 90} if "make_test_s" in r else {}),
    }


def table(r: Results) -> str:
    rows = [f"{'figure':<20} {'value':>14}"]
    for k in KEYS:
        v = r[k]
        rows.append(f"{k:<20} {v:>14,.3f}" if isinstance(v, float) and v < 100 else f"{k:<20} {v:>14,.0f}")
    rows.append("")
    rows.append(f"{'Mpps by frame size':<20} " + " ".join(f"{s:>8}" for s in SIZES))
    for m, sizes in r["by_size"].items():
        rows.append(f"{m:<20} " + " ".join(f"{sizes[str(s)]:>8.3f}" for s in SIZES))
    if "make_test_s" in r:
        rows.append(f"{'make_test_s':<20} {r['make_test_s']:>14,.1f}")
    rows.append("")
    rows.append("a scenario's median ms by phase: "
                + ", ".join(f"{k} {v:g}" for k, v in r["scenario_phases_ms"].items()))
    rows.append("")
    rows += [f"{'met ' if ok else 'MISSED'}  {t}" for t, ok in r["targets"].items()]
    m = r["machine"]
    kind = "smoke" if m.get("smoke") else "quick" if m["quick"] else "full"
    rows.append(f"\n{m['cores']} cores, kernel {m['kernel']}, {kind} run, {m['date']}, "
                f"suite {' '.join(m.get('suite', ['scenarios/']))}")
    return "\n".join(rows)


def plot(r: Results, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.27
    for i, (m, label) in enumerate((("skb", "l2fwd skb"), ("drv", "l2fwd drv"), ("drop", "XDP_DROP ceiling"))):
        xs = [j + (i - 1) * width for j in range(len(SIZES))]
        ax.bar(xs, [r["by_size"][m][str(s)] for s in SIZES], width, label=label)
    ax.set_xticks(range(len(SIZES)), [f"{s} B" for s in SIZES])
    ax.set_ylabel("Mpps")
    ax.set_ylim(0, 1.3 * max(v for sizes in r["by_size"].values() for v in sizes.values()))
    ax.set_title(f"l2fwd through veth, {r['machine']['cores']} cores, kernel {r['machine']['kernel']}")
    ax.legend(loc="upper left", ncol=3)
    bottom = 0.0
    for phase, ms in r["scenario_phases_ms"].items():      # one stacked bar: where a scenario's time goes
        bx.bar([0], [ms], 0.5, bottom=bottom, label=f"{phase} {ms:g} ms")
        bottom += ms
    bx.set_xticks([0], ["median scenario"])
    bx.set_ylabel("ms")
    bx.set_xlim(-0.5, 1.6)
    bx.legend(loc="upper right", fontsize=7)
    bx.set_title("where a scenario's time goes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(quick: bool, json_path: str | None, plot_path: str | None, suite: list[str] | None = None,
         smoke: bool = False) -> int:
    from .. import inventory, programs
    try:
        r = run(quick, suite, smoke)
    finally:
        inventory.close()
        fates.close()
        programs.close_objects()
    print(table(r))
    if json_path:
        Path(json_path).write_text(json.dumps(r, indent=2) + "\n")
    if plot_path:
        plot(r, plot_path)
    return 0
