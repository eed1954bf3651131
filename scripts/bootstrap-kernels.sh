#!/usr/bin/env bash
# What the kernel matrix needs, beyond scripts/bootstrap.sh: QEMU, busybox (virtme-ng's
# initramfs), Debian's kernel images with their headers (bcc compiles against them inside
# the guest), and virtme-ng in .venv. A quick no-op when all is there.
#   scripts/bootstrap-kernels.sh 6.1 6.12
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "bootstrap-kernels: $*" >&2; }
die() { echo "bootstrap-kernels: $*" >&2; exit 1; }
[ $# -gt 0 ] || die "usage: $0 SERIES... (6.1, 6.12)"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
need=()
for p in qemu-system-x86 busybox-static; do installed "$p" || need+=("$p"); done
updated=0
for series in "$@"; do
  case "$series" in
    6.1)  pattern='^linux-image-6\.1\.0-[0-9]+-amd64$' ;;
    6.12) pattern='^linux-image-6\.12\.[0-9]+\+deb12-amd64$' ;;
    *) die "kernel series $series: not one of Debian 12's (6.1, 6.12)" ;;
  esac
  have=$(ls /boot/vmlinuz-* 2>/dev/null | sed 's|/boot/vmlinuz-||' | grep -E "${pattern#^linux-image-}" | sort -V | tail -n 1 || true)
  if [ -n "$have" ] && [ -e "/lib/modules/$have/build/include" ]; then continue; fi
  if [ "$updated" = 0 ]; then apt-get update -qq; updated=1; fi
  image=$(apt-cache search --names-only "$pattern" | cut -d' ' -f1 | sort -V | tail -n 1)
  [ -n "$image" ] || die "find a Debian kernel $series: no package matches $pattern"
  need+=("$image" "${image/linux-image/linux-headers}")
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$updated" = 1 ] || apt-get update -qq
  say "apt-get install ${need[*]} (kernel images generate an initramfs: about a minute each)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || die "install ${need[*]}: apt-get failed"
fi
want=$(sha256sum requirements-kernels.txt | cut -c1-16)
if [ "$(cat .venv/.requirements-kernels 2>/dev/null)" != "$want" ]; then
  say "pip install -r requirements-kernels.txt"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-kernels.txt \
    || die "install virtme-ng: pip failed"
  echo "$want" > .venv/.requirements-kernels
fi
