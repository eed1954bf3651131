"""`python -m lab kernels`: the scenarios on the host kernel and inside VMs booted on Debian's
kernels, one table of scenario x kernel.

Each VM is virtme-ng (`vng`) booting a Debian kernel over this machine's own root
file system (read-only, 9p), with a results folder shared read-write: the guest runs
scripts/in-vm.sh, which runs pytest against the guest kernel and writes JUnit XML, the
pytest output and the scenarios' findings (which counters moved) back. KVM is used where it
can boot a stock kernel; where /dev/kvm is a paravirtual KVM (kvm_pvm), which cannot, the
guest runs in software emulation (slower; measured: boot and a bcc compile ~35 s).
"""
from __future__ import annotations

import glob
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .errors import LabError

ROOT = Path(__file__).resolve().parent.parent
SERIES = {"5.10": "5.10.0-*-amd64", "6.1": "6.1.0-*-amd64", "6.12": "6.12.*+deb12-amd64"}
DEFAULT = ["5.10", "6.1", "6.12"]
UNPACKED = "/var/lib/xdplab-kernels"   # Debian 11's kernel, unpacked (not installed) by bootstrap-kernels.sh


Result = dict[str, Any]
"""One kernel's results, as matrix.json holds them (JSON values: kernel, seconds, tests, findings...)."""


def _version_key(v: str) -> list[tuple[int, int | str]]:
    return [(0, int(x)) if x.isdigit() else (1, x) for x in v.replace("+", ".").replace("-", ".").split(".")]


def find_kernel(series: str) -> tuple[str, str]:
    """The newest kernel of `series` ("5.10", "6.1", "6.12", or an exact version): (version,
    image). Installed ones are /boot/vmlinuz-<version>; unpacked ones sit under UNPACKED with
    their modules and headers beside them (virtme-ng finds the modules from the image's path)."""
    pattern = SERIES.get(series, series)
    images = {p.split("vmlinuz-", 1)[1]: p for p in
              [*glob.glob(f"/boot/vmlinuz-{pattern}"), *glob.glob(f"{UNPACKED}/{pattern}/boot/vmlinuz-{pattern}")]}
    if not images:
        raise LabError(f"find kernel {series}", f"no /boot/vmlinuz-{pattern} nor {UNPACKED}/{pattern}",
                       f"fetch it: scripts/bootstrap-kernels.sh {series} (make kernels does)")
    version = max(images, key=_version_key)
    image = images[version]
    modules = f"{image.rsplit('/boot/', 1)[0]}/lib/modules/{version}"
    if not os.path.isdir(f"{modules}/build/include"):
        raise LabError(f"use kernel {version}", f"its headers are not in {modules}/build (bcc needs them in the guest)",
                       f"fetch them: scripts/bootstrap-kernels.sh {series}")
    return version, image


def kvm_usable() -> bool:
    """KVM that can boot a stock Debian kernel: /dev/kvm, and not the paravirtual kvm_pvm."""
    return os.path.exists("/dev/kvm") and not os.path.exists("/sys/module/kvm_pvm")


GRACE_S = 120.0     # after the guest's own budget: its pytest is stopped, then killed, then the VM powers off
BOOT_S = 600.0      # from vng's start to pytest's first byte (measured under software emulation: 30-60 s)


def vm_command(image: str, out: Path, kvm: bool, budget: float, pytest_args: list[str]) -> list[str]:
    """virtme-ng booting `image` over this root, running scripts/in-vm.sh; --verbose puts the
    kernel's console in the log, where a hung boot or a kernel warning shows."""
    script = " ".join(shlex.quote(a) for a in [str(ROOT / "scripts" / "in-vm.sh"), str(out),
                                               str(int(budget)), *pytest_args])
    return ["vng", "--run", image, "--user", "root", "--force-9p", "--memory", "3G", "--verbose",
            "--cpus", "2", "--rwdir", str(out), *([] if kvm else ["--disable-kvm"]), "--exec", script]


def run_vm(version: str, image: str, pytest_args: list[str], out: Path, kvm: bool,
           budget: float = 3600.0) -> Result:
    """Boot `image`, run pytest inside, read back what it wrote to `out`. The VM's console
    (kernel messages included) streams to out/vng.log as it runs. A guest whose pytest has not
    started after BOOT_S (a hung boot) is killed and booted once more; one that gives no result
    within `budget` (a test stuck in the kernel) is killed, and the result says where it got
    to, from pytest's own output or the console."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = vm_command(image, out, kvm, budget, pytest_args)
    # scripts/vm/virtme-run: the guest caches its 9p root (4-6 x faster under emulation)
    env = dict(os.environ, PATH=f"{ROOT / 'scripts' / 'vm'}:{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    t = time.monotonic()
    for boot in (1, 2):
        for stale in out.iterdir():         # the last run's results; the first boot's console stays
            if stale.is_file() and (boot == 1 or stale.name != "vng.boot1.log"):
                stale.unlink()
        ended, rc = _boot(cmd, env, out, budget)
        if ended != "hung boot" or boot == 2:
            break
        (out / "vng.log").rename(out / "vng.boot1.log")
        print(f"  VM on {version}: pytest had not started after {BOOT_S:.0f} s (console: {out / 'vng.boot1.log'});"
              f" killed, booting it once more", file=sys.stderr, flush=True)
    res = _results(version, out, time.monotonic() - t, boot_rc=rc)
    if ended == "hung boot":
        res["error"] = f"pytest had not started after {BOOT_S:.0f} s, in two boots; {_where(out)}"
    elif ended == "over budget":
        res["error"] = f"the VM gave no result in {budget + GRACE_S:.0f} s and was killed; {_where(out)}"
    return res


def _boot(cmd: list[str], env: dict[str, str], out: Path, budget: float) -> tuple[str, int]:
    """Run the VM once: ("done", vng's exit code), or ("hung boot" | "over budget", -9):
    killed, whole process group."""
    t = time.monotonic()
    with open(out / "vng.log", "w") as log:
        vm = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                              start_new_session=True)     # its own group: qemu and its helpers go with it
        try:
            while True:
                try:
                    return "done", vm.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass
                elapsed = time.monotonic() - t
                if elapsed > BOOT_S and not (out / "pytest.txt").exists():
                    return "hung boot", -9
                if elapsed > budget + GRACE_S:             # the guest stops pytest at `budget` itself
                    return "over budget", -9
        finally:            # a timeout, Ctrl-C, SIGTERM, or a helper vng left behind: nothing of the VM runs on
            try:
                os.killpg(vm.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            vm.wait()


def _where(out: Path) -> str:
    """Where a guest got to: the last test pytest named, or the console's last lines."""
    pytest_txt = out / "pytest.txt"
    if pytest_txt.exists() and pytest_txt.stat().st_size:
        lines = [ln.strip() for ln in pytest_txt.read_text(errors="replace").splitlines() if ln.strip()]
        return f"pytest's last lines ({pytest_txt}): " + " / ".join(lines[-3:])
    lines = [ln.strip() for ln in (out / "vng.log").read_text(errors="replace").splitlines() if ln.strip()] \
        if (out / "vng.log").exists() else []
    return f"pytest never started; the console's last lines ({out / 'vng.log'}): " + " / ".join(lines[-5:])


def run_host(pytest_args: list[str], out: Path) -> Result:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, XDPLAB_FINDINGS=str(out / "findings.jsonl"), XDPLAB_PACE_FILE=str(out / "slowdown"))
    if (out / "findings.jsonl").exists():
        (out / "findings.jsonl").unlink()
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", f"--junitxml={out / 'junit.xml'}",
                        f"--lab-artifacts={out / 'artifacts'}", *pytest_args], cwd=ROOT, capture_output=True,
                       text=True, env=env)
    (out / "pytest.txt").write_text(r.stdout + r.stderr)
    (out / "rc").write_text(f"{r.returncode}\n")
    (out / "kernel").write_text(platform.release() + "\n")
    return _results(platform.release(), out, time.monotonic() - t, boot_rc=0)


def _results(version: str, out: Path, seconds: float, boot_rc: int) -> Result:
    res: Result = {"kernel": version, "seconds": round(seconds, 1), "tests": {}, "findings": {}}
    if (out / "slowdown").exists():      # lab/pace.py, measured where the tests ran
        res["slowdown"] = float((out / "slowdown").read_text())
    if not (out / "junit.xml").exists():
        res["error"] = f"no results (vng exit {boot_rc}); {_where(out)}"
        return res
    for case in ET.parse(out / "junit.xml").getroot().iter("testcase"):
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        ended = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        kind = ended.tag if ended is not None else "passed"
        res["tests"][name] = {"failure": "failed", "error": "error"}.get(kind, kind)
        if ended is not None and kind == "skipped":     # the probe that said this kernel lacks it
            res.setdefault("skips", {})[name] = _skip_reason(ended.get("message", ""))
    if (out / "findings.jsonl").exists():
        for line in (out / "findings.jsonl").read_text().splitlines():
            f = json.loads(line)
            res["findings"][f["test"].split("::", 1)[-1].replace("::", "::")] = f
    return res


def _skip_reason(message: str) -> str:
    """pytest's "Skipped: <reason>" (the reason may be a LabError's "verb object: reason; fix")."""
    return message.removeprefix("Skipped: ").strip()


def table(results: list[Result]) -> str:
    kernels = [r["kernel"] for r in results]
    tests = sorted({t for r in results for t in r["tests"]})
    width = max([len(t) for t in tests] + [8])
    head = f"{'scenario':<{width}}  " + "  ".join(f"{k:<28}" for k in kernels)
    wall = f"{'(wall time, slowdown)':<{width}}  " + "  ".join(
        f"{str(r['seconds']) + ' s, x' + str(r.get('slowdown', '?')):<28}" for r in results)
    rows = [head, wall, "-" * len(head)]
    for t in tests:
        cells = []
        for r in results:
            outcome = r["tests"].get(t, "-")
            moved = _finding(r, t)
            cells.append(f"{outcome + (' ' + moved if moved else ''):<28}")
        rows.append(f"{t:<{width}}  " + "  ".join(cells))
    rows.append("")
    for r in results:
        counts = {o: sum(v == o for v in r["tests"].values()) for o in ("passed", "failed", "error", "skipped")}
        rows.append(f"{r['kernel']}: " + (", ".join(f"{n} {o}" for o, n in counts.items() if n) or "no test ran") +
                    f" in {r['seconds']} s" + (f"; {r['error'][:300]}" if "error" in r else ""))
        by_reason: dict[str, list[str]] = {}
        for t, reason in sorted(r.get("skips", {}).items()):
            by_reason.setdefault(reason, []).append(t)
        for reason, skipped in by_reason.items():
            rows.append(f"  skipped {len(skipped)}: {reason}\n    {', '.join(skipped)}")
    return "\n".join(rows)


def _finding(result: Result, test: str) -> str:
    for key, f in result["findings"].items():
        if test.endswith(key.split("::")[-1]):
            out = []
            if "moved" in f:
                drops = [f"{iface} {c}" for iface, cs in f["moved"].items() for c in cs]
                out.append("; ".join(drops) if drops else "no drop counter")
            if f.get("not_reported"):
                out.append("not reported: " + ", ".join(f["not_reported"]))
            if f.get("fates") is not None:     # what the kernel said: the events that end frames, and transmits
                said = [f"{iface} {label} x{n}" for iface, labels in f["fates"].items() if isinstance(labels, dict)
                        for label, n in labels.items()]
                out.append("kernel: " + ("; ".join(said) if said else "nothing"))
            return "(" + " | ".join(out) + ")" if out else ""
    return ""


def main(kernels: list[str], pytest_args: list[str], host: bool, kvm: str, budget: float = 3600.0) -> int:
    out_root = ROOT / ".lab-kernels"
    use_kvm = kvm == "on" or (kvm == "auto" and kvm_usable())
    found = [find_kernel(series) for series in kernels]       # every kernel there, before an hour of work
    if found and not shutil.which("vng", path=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}"):
        raise LabError("boot a kernel VM", "virtme-ng (vng) is not installed",
                       f"install it: scripts/bootstrap-kernels.sh {' '.join(kernels)} (make kernels does)")
    results = []
    if host:
        print(f"  host kernel {platform.release()}: pytest {' '.join(pytest_args)}", file=sys.stderr, flush=True)
        results.append(run_host(pytest_args, out_root / "host"))
    for version, image in found:
        print(f"  VM on {version} ({'KVM' if use_kvm else 'software emulation'}): pytest {' '.join(pytest_args)}",
              file=sys.stderr, flush=True)
        results.append(run_vm(version, image, pytest_args, out_root / version, use_kvm, budget))
    (out_root / "matrix.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (out_root / "matrix.txt").write_text(text + "\n")
    print(text)
    bad = [r["kernel"] for r in results if "error" in r or any(v in ("failed", "error") for v in r["tests"].values())]
    if bad:
        print(f"\nfailed on: {', '.join(bad)} (details under .lab-kernels/<kernel>/pytest.txt)", file=sys.stderr)
    passed = sum(v == "passed" for r in results for v in r["tests"].values())
    failed = sum(v in ("failed", "error") for r in results for v in r["tests"].values()) + \
        sum("error" in r for r in results)
    print(f"matrix: {passed} passed, {failed} failed")
    return 1 if bad else 0
