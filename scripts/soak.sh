#!/usr/bin/env bash
# Soak: run the scenario suite N times in a row with -n 2 (default 20); after every run,
# check that nothing of the lab is left. Prints one line per run (with how labs were kept
# between tests, and how many were rebuilt after a test left them changed) and a total.
#   scripts/soak.sh [N]            the scenario suite N times
#   scripts/soak.sh fuzz [N]       the lab-file and command-line fuzzers, N examples each (default 2000)
set -u
cd "$(dirname "$0")/.."
if [ "${1:-}" = fuzz ]; then
  XDPLAB_INPUT_FUZZ_EXAMPLES=${2:-2000} .venv/bin/python -m pytest tests/test_inputs.py -q -p no:randomly
  rc=$?
  left=$(( $(ip netns list | grep -c '^xdplab-') + $(ls /run/xdplab/owners 2>/dev/null | wc -l) \
          + $(ls /run/xdplab/up 2>/dev/null | wc -l) + $(grep -c xdplab /proc/mounts) ))
  echo "soak fuzz: rc=$rc leftovers=$left"
  [ "$rc" = 0 ] && [ "$left" = 0 ]
  exit
fi
runs=${1:-20}
failures=0 leaks=0 frames=0
for i in $(seq "$runs"); do
  out=$(.venv/bin/python -m pytest scenarios/ -n 2 -q -p no:randomly 2>&1)
  rc=$?
  n=$(printf '%s\n' "$out" | sed -n 's/^xdplab: \([0-9]*\) frames sent.*/\1/p')
  summary=$(printf '%s\n' "$out" | tail -n 1)
  labs=$(printf '%s\n' "$out" | sed -n 's/^xdplab: labs: \([0-9]* built, [0-9]* reused\).*, \([0-9]*\) rebuilt.*/\1, \2 rebuilt/p')
  left=$(( $(ip netns list | grep -c '^xdplab-') + $(ls /run/xdplab/owners 2>/dev/null | wc -l) \
          + $(grep -c xdplab /proc/mounts) ))
  [ "$rc" = 0 ] || { failures=$((failures + 1)); printf '%s\n' "$out" | tail -n 40; }
  [ "$left" = 0 ] || leaks=$((leaks + 1))
  frames=$((frames + ${n:-0}))
  echo "run $i: rc=$rc frames=${n:-0} leftovers=$left labs: ${labs:-?}  $summary"
done
echo "soak: $runs runs, $failures failed, $leaks leaked, $frames frames"
[ "$failures" = 0 ] && [ "$leaks" = 0 ]
