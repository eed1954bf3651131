#!/bin/bash
# Run inside a virtme-ng guest (see lab/kernels.py): the host's root file system, the
# guest's kernel. Mounts what the lab needs, runs pytest on the arguments, and writes its
# results to $1 (a directory shared read-write with the host); $2 is the run's budget in
# seconds (pytest is stopped then, and killed a minute later if it does not stop).
set -u
out=$1; budget=$2; shift 2
cd "$(dirname "$0")/.."
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
mkdir -p /run/netns /run/xdplab
uname -r > "$out/kernel"
# unbuffered: a run stopped by the budget leaves its last line in pytest.txt
export XDPLAB_FINDINGS="$out/findings.jsonl" XDPLAB_PACE_FILE="$out/slowdown" PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# -v: each test is named before it runs, so a run stopped by the budget shows where it was
timeout -k 60 "$budget" .venv/bin/python -m pytest -v -p no:cacheprovider --junitxml="$out/junit.xml" \
    --lab-artifacts="$out/artifacts" "$@" > "$out/pytest.txt" 2>&1
echo $? > "$out/rc"
