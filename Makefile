# The two commands of the README. Each first installs what is missing (scripts/bootstrap.sh:
# Debian packages, kernel headers for bcc, bpffs/tracefs mounts, .venv) and is a quick no-op
# once everything is there.
PY := .venv/bin/python
# pytest keeps its assertion-rewritten modules (test modules, and every module of a package
# that registers a pytest plugin: hypothesis's ~90) only where bytecode may be written; with
# PYTHONDONTWRITEBYTECODE set, every pytest process, each xdist worker and each child session
# rewrote them again (~0.5 s each)
unexport PYTHONDONTWRITEBYTECODE
PYTEST_ARGS ?=
PYTEST := $(PY) -m pytest -n auto $(PYTEST_ARGS)
# make test: one worker more than CPUs: most of its tests wait on the sessions and commands
# they start (measured on 2 cores: 97 s with 2 workers, 87-89 s with 3)
TEST_WORKERS := $(shell echo $$(( $$(nproc) + 1 )))

BPF_CFLAGS := -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -Wall
BPF_OBJECTS := $(patsubst %.bpf.c,%.bpf.o,$(wildcard bpf/*.bpf.c)) bpf/l2fwd.debug.bpf.o

.PHONY: setup bpf ctl scenarios test check kernels kernels-ci clean-venv

setup:
	@scripts/bootstrap.sh
	@$(MAKE) --no-print-directory bpf
	@$(MAKE) --no-print-directory ctl
	@# bytecode for every process the tests start, also where PYTHONDONTWRITEBYTECODE is set
	@# (each command would compile lab/ again: ~55 ms); a no-op when it is up to date
	@$(PY) -m compileall -q lab scenarios tests conftest.py

bpf: $(BPF_OBJECTS)       ## the ELF builds of the forwarder (clang, libbpf style)

bpf/%.bpf.o: bpf/%.bpf.c
	clang $(BPF_CFLAGS) -c $< -o $@

bpf/%.debug.bpf.o: bpf/%.bpf.c
	clang $(BPF_CFLAGS) -DL2FWD_DEBUG -c $< -o $@

ctl: build/l2fwdctl       ## the Go control plane (imitates the seed's), offline from Debian's Go packages

build/l2fwdctl: controlplane/l2fwdctl/main.go
	GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$(CURDIR)/build/gocache go build -o $@ ./controlplane/l2fwdctl

scenarios: setup          ## the main job: every scenario against the real kernel
	$(PYTEST) scenarios/

# tests/test_reuse.py runs the whole scenario suite twice, with labs kept between tests and
# with a fresh lab per test, and compares the outcomes: that is make test's scenario run
test: check               ## everything: types and lint, tests of lab/ itself and the scenarios (both ways)
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS) tests/

check: setup              ## mypy --strict on lab/ (pyproject's [tool.mypy]) and ruff on all the Python
	$(PY) -m mypy
	$(PY) -m ruff check --quiet lab scenarios tests conftest.py setup.py

kernels: setup            ## the scenarios on the host kernel and in VMs on Debian's 5.10, 6.1 and 6.12
	@scripts/bootstrap-kernels.sh 5.10 6.1 6.12
	$(PY) -m lab kernels --kernel 5.10 --kernel 6.1 --kernel 6.12

kernels-ci: setup         ## CI's share of the matrix: the drop scenarios on 6.1
	@scripts/bootstrap-kernels.sh 6.1
	$(PY) -m lab kernels --kernel 6.1 --no-host --vm-timeout 1200 -- scenarios/test_drops.py --lab-forwarders=bcc

clean-venv:
	rm -rf .venv
