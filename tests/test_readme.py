"""The README's scenario runs as printed: copied into a file of its own, it passes in every
mode and variant (a user who copies it gets a working scenario)."""
from __future__ import annotations

import re

from tests import subproc

pytestmark = subproc.SESSIONS


def test_the_readme_scenario_passes_as_printed(tmp_path):
    readme = (subproc.ROOT / "README.md").read_text()
    section = readme.split("## A scenario you can copy", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "test_copied.py").write_text(code)
    r = subproc.run("-m", "pytest", "-q", "-p", "lab.plugin", "-p", "lab.l2fwd.plugin", "--rootdir", str(tmp_path),
                    str(tmp_path), env=subproc.child_env(PYTHONPATH=str(subproc.ROOT)))
    assert r.returncode == 0 and "4 passed" in r.stdout, r.stdout + r.stderr


def test_testing_your_own_program_works_as_printed(tmp_path):
    """The README's walk from a .c file to a passing skb + drv scenario, outside the repository."""
    import subprocess
    section = (subproc.ROOT / "README.md").read_text().split("## Testing your own program", 1)[1]
    c_code = re.search(r"```c\n(.*?)```", section, re.S).group(1)
    py_code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "my_fwd.bpf.c").write_text(c_code)
    (tmp_path / "test_my_fwd.py").write_text(py_code)
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", "my_fwd.bpf.c",
                    "-o", "my_fwd.bpf.o"], cwd=tmp_path, check=True)
    r = subproc.run("-m", "pytest", "-p", "lab.plugin", "--rootdir", str(tmp_path), str(tmp_path / "test_my_fwd.py"))
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout + r.stderr


def test_xdplab_installed_elsewhere_runs_your_scenario_with_nothing_configured(tmp_path):
    """The README's own-program walk in a repository of its own, with xdplab installed by pip
    (the README's command, into a directory of its own instead of a new venv: the packages it
    depends on are this venv's): `pytest` there finds the lab's fixtures through the package's
    pytest11 entry points, the lab's BPF objects come from the package, and `python -m lab`
    works from there. Nothing of the checkout is on the path."""
    import subprocess
    import sys
    section = (subproc.ROOT / "README.md").read_text().split("## Testing your own program", 1)[1]
    mine, site = tmp_path / "mine", tmp_path / "site-packages"
    mine.mkdir()
    (mine / "my_fwd.bpf.c").write_text(re.search(r"```c\n(.*?)```", section, re.S).group(1))
    (mine / "test_my_fwd.py").write_text(re.search(r"```python\n(.*?)```", section, re.S).group(1))
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", "my_fwd.bpf.c",
                    "-o", "my_fwd.bpf.o"], cwd=mine, check=True)
    import shutil
    source = tmp_path / "xdplab"       # what a clone holds, and the objects `make bpf` built (kept up to date)
    for part in ("lab", "bpf"):
        shutil.copytree(subproc.ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "setup.py", "Makefile"):
        shutil.copy2(subproc.ROOT / part, source / part)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(source)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert {p.name for p in (site / "lab" / "bpf").glob("*.bpf.o")} >= {"fates.bpf.o", "l2fwd.bpf.o",
                                                                     "sysctl_writes.bpf.o", "xdp_pass.bpf.o"}
    env = subproc.child_env(PYTHONPATH=str(site))
    where = subprocess.run([sys.executable, "-c", "import lab; print(lab.__file__, lab.BPF_DIR)"], cwd=mine, env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert where == [str(site / "lab" / "__init__.py"), str(site / "lab" / "bpf")]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=mine, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout + r.stderr
    fixtures = subprocess.run([sys.executable, "-m", "pytest", "--fixtures"], cwd=mine, env=env, capture_output=True,
                              text=True).stdout
    for name in ("lab", "lab_topology", "xdp_mode", "xdp_program", "lab_program", "l2fwd", "l2fwd_kind", "dut"):
        assert f"{name} -- " in fixtures and "site-packages/lab/" in fixtures, (name, fixtures[-3000:])
    cli = subprocess.run([sys.executable, "-m", "lab", "--help"], cwd=mine, env=env, capture_output=True, text=True)
    assert cli.returncode == 0 and "python -m lab" in cli.stdout, cli.stdout + cli.stderr
