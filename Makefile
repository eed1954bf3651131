# The two commands of the README. Each first installs what is missing (scripts/bootstrap.sh:
# Debian packages, kernel headers for bcc, bpffs/tracefs mounts, .venv) and is a quick no-op
# once everything is there.
PY := .venv/bin/python
PYTEST := $(PY) -m pytest -n auto

.PHONY: setup scenarios test clean-venv

setup:
	@scripts/bootstrap.sh

scenarios: setup          ## the main job: every scenario against the real kernel
	$(PYTEST) scenarios/

test: setup               ## everything: tests of lab/ itself and the scenarios
	$(PYTEST) tests/ scenarios/

clean-venv:
	rm -rf .venv
