# The two commands of the README. Each first installs what is missing (scripts/bootstrap.sh:
# Debian packages, kernel headers for bcc, bpffs/tracefs mounts, .venv) and is a quick no-op
# once everything is there.
PY := .venv/bin/python
PYTEST := $(PY) -m pytest -n auto

BPF_CFLAGS := -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -Wall
BPF_OBJECTS := bpf/l2fwd.bpf.o bpf/l2fwd.debug.bpf.o

.PHONY: setup bpf scenarios test clean-venv

setup:
	@scripts/bootstrap.sh
	@$(MAKE) --no-print-directory bpf

bpf: $(BPF_OBJECTS)       ## the ELF builds of the forwarder (clang, libbpf style)

bpf/%.bpf.o: bpf/%.bpf.c
	clang $(BPF_CFLAGS) -c $< -o $@

bpf/%.debug.bpf.o: bpf/%.bpf.c
	clang $(BPF_CFLAGS) -DL2FWD_DEBUG -c $< -o $@

scenarios: setup          ## the main job: every scenario against the real kernel
	$(PYTEST) scenarios/

test: setup               ## everything: tests of lab/ itself and the scenarios
	$(PYTEST) tests/ scenarios/

clean-venv:
	rm -rf .venv
