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
    r = subproc.run("-m", "pytest", "-q", "-p", "lab.plugin", "--rootdir", str(tmp_path), str(tmp_path),
                    env=subproc.child_env(PYTHONPATH=str(subproc.ROOT)))
    assert r.returncode == 0 and "4 passed" in r.stdout, r.stdout + r.stderr
