"""Packaging needs one step pyproject.toml cannot say: the lab's BPF objects (bpf/*.bpf.o,
not in git) are built with clang (`make bpf`) before the package's files are collected, so
that an installed xdplab carries them. Everything else is in pyproject.toml."""
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithBpf(build_py):
    def run(self) -> None:
        try:
            subprocess.run(["make", "--no-print-directory", "bpf"], check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise SystemExit(f"build xdplab's BPF objects: `make bpf` failed ({e}); install make, clang and "
                             "libbpf's headers (Debian: make clang libbpf-dev), then install again") from None
        super().run()


setup(cmdclass={"build_py": BuildWithBpf})
