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
