#!/bin/bash
# Run inside a virtme-ng guest (see lab/kernels.py): the host's root file system, the
# guest's kernel. Mounts what the lab needs, runs pytest on the arguments, and writes its
# results to $1 (a directory shared read-write with the host).
set -u
out=$1; shift
cd "$(dirname "$0")/.."
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
mkdir -p /run/netns /run/xdplab
uname -r > "$out/kernel"
export XDPLAB_FINDINGS="$out/findings.jsonl" XDPLAB_PACE_FILE="$out/slowdown" PYTHONDONTWRITEBYTECODE=1
timeout 3000 .venv/bin/python -m pytest -q -p no:cacheprovider --junitxml="$out/junit.xml" \
    --lab-artifacts="$out/artifacts" "$@" > "$out/pytest.txt" 2>&1
echo $? > "$out/rc"
