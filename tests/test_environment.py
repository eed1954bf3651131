"""Bad machines: each missing prerequisite gives an error that names it and the fix, before
anything is built, and a program the verifier refuses shows the verifier's log."""
from __future__ import annotations

import platform
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from lab import netns
from lab.errors import CompileError
from lab.programs import Program, XdpProgram
from tests import subproc

pytestmark = subproc.SESSIONS

SCENARIO = "scenarios/test_forwarding.py::test_arp_is_passed_and_answered[bcc-skb]"
RELEASE = platform.release()


def scenario_under(*prefix: str, **env: str) -> str:
    """Run one scenario under `prefix` (a command that takes something away), with `env`
    added to its environment and a run id of its own (these tests run side by side); its output."""
    run = secrets.token_hex(2)
    r = subproc.run("-m", "pytest", "-q", "-rE", "--no-header", SCENARIO, prefix=prefix,
                    env=subproc.child_env(XDPLAB_RUN=run, **env))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 error" in r.stdout, r.stdout
    assert [n for n in netns.list_names() if n.startswith(f"xdplab-{run}-")] == [], \
        "nothing may be left:\n" + r.stdout + r.stderr
    return r.stdout


def test_not_root(tmp_path):
    """As user nobody (who may not read this checkout: CI clones into a private folder), the
    check itself runs from a world-readable copy of lab/ with Debian's python3."""
    copy = Path(tempfile.mkdtemp(prefix="xdplab-env-"))
    try:
        shutil.copytree(subproc.ROOT / "lab", copy / "lab", ignore=shutil.ignore_patterns("__pycache__"))
        for p in [copy, *copy.rglob("*")]:
            p.chmod(0o755)
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from lab import environment\n"
                "environment.require()")
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                            "-c", code, str(copy)], capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(copy)
    assert r.returncode == 1
    assert "use the XDP lab on this machine: not running as root (euid 65534): the lab creates namespaces and " \
           "attaches XDP; run as root (sudo make test)" in r.stderr, r.stderr


def test_without_cap_net_admin():
    """pytest skips the root tests and says why (lab.plugin: the root marker); a command
    names the missing capability and the fix."""
    drop = ("setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin")
    r = subproc.run("-m", "pytest", "-q", "-rs", "--no-header", SCENARIO, prefix=drop)
    assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout + r.stderr
    assert "needs root and CAP_NET_ADMIN: run as root or use the Vagrantfile" in r.stdout, r.stdout
    r = subproc.run("-m", "lab", "up", "topologies/seed.toml", "--name", f"nocap{secrets.token_hex(2)}", prefix=drop)
    assert r.returncode == 1 and "missing CAP_NET_ADMIN" in r.stderr and "run in a privileged VM or container" in \
        r.stderr, r.stderr


def test_bpffs_not_mounted():
    out = scenario_under("unshare", "--mount", "--propagation", "private", "sh", "-c",
                         'umount /sys/fs/bpf && exec "$0" "$@"')
    assert "bpffs is not mounted on /sys/fs/bpf; mount -t bpf bpf /sys/fs/bpf, or run `make setup`" in out, out


def test_kernel_headers_missing(tmp_path):
    out = scenario_under("unshare", "--mount", "--propagation", "private", "sh", "-c",
                         f'mount --bind {tmp_path} /lib/modules/{RELEASE} && exec "$0" "$@"')
    assert f"no kernel headers for {RELEASE} (/lib/modules/{RELEASE}/build), which bcc needs to compile" in out


def test_bcc_missing(tmp_path):
    fake = tmp_path / "bcc"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named bcc (hidden by the test)')\n")
    out = scenario_under(PYTHONPATH=str(tmp_path))
    assert "import bcc: No module named bcc (hidden by the test); install Debian's python3-bpfcc" in out, out


def test_verifier_refusal_shows_the_verifier_log(tmp_path):
    src = tmp_path / "unchecked.c"
    src.write_text("int xdp_l2fwd(struct xdp_md *ctx)\n{\n    return *(u32 *)(long)ctx->data;\n}\n")
    with pytest.raises(CompileError) as e:
        XdpProgram(Program(src, "xdp_l2fwd"))
    text = str(e.value)
    assert text.startswith("load xdp_l2fwd from unchecked.c: the verifier refused it:\n")
    assert "invalid access to packet" in text and "R1 offset is outside of the packet" in text
    assert text.endswith("fix the program: the verifier's log above ends at the refused instruction")


def test_compile_error_shows_the_compiler_diagnostics(tmp_path: Path):
    src = tmp_path / "bad.c"
    src.write_text("int xdp_l2fwd(struct xdp_md *ctx) { return undefined_thing; }\n")
    with pytest.raises(CompileError, match=r"(?s)compile bad.c with bcc: .*use of undeclared identifier "
                                           r"'undefined_thing'.*fix the C source"):
        XdpProgram(Program(src, "xdp_l2fwd"))


def test_a_libbpf_source_given_to_bcc_is_told_to_be_built_with_clang(tmp_path: Path):
    src = tmp_path / "mine.bpf.c"
    shutil.copy(subproc.ROOT / "bpf" / "xdp_pass.bpf.c", src)      # libbpf style: SEC("xdp"), bpf/bpf_helpers.h
    with pytest.raises(CompileError, match=r"(?s)compile mine.bpf.c with bcc: .*mine.bpf.c is written for libbpf "
                                           r"\(SEC\(...\), bpf/bpf_helpers.h\), not bcc: build it with clang "
                                           r"\(clang -O2 -g -target bpf .* -c mine.bpf.c -o mine.bpf.o\) and give "
                                           r"the .o"):
        XdpProgram(Program(src, "xdp_pass"))
