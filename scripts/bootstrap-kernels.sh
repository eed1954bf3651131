#!/usr/bin/env bash
# What the kernel matrix needs, beyond scripts/bootstrap.sh: QEMU, busybox (virtme-ng's
# initramfs), Debian's kernel images with their headers (bcc compiles against them inside
# the guest), and virtme-ng in .venv. A quick no-op when all is there.
#   scripts/bootstrap-kernels.sh 5.10 6.1 6.12
# 6.1 and 6.12 are Debian 12's own and are installed. 5.10 is Debian 11's (bullseye): its
# packages are fetched with a private apt configuration (the system's own mirrors, the
# bullseye suites; the system's sources and package database stay as they are) and unpacked,
# not installed, under /var/lib/xdplab-kernels/<version>/ (not /var/cache: virtme-ng hides
# it behind a tmpfs in the guest). virtme-ng finds the modules beside the image.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "bootstrap-kernels: $*" >&2; }
die() { echo "bootstrap-kernels: $*" >&2; exit 1; }
[ $# -gt 0 ] || die "usage: $0 SERIES... (5.10, 6.1, 6.12)"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
need=()
for p in qemu-system-x86 busybox-static; do installed "$p" || need+=("$p"); done
updated=0
unpacked=/var/lib/xdplab-kernels

# Debian 11's 5.10: download into a private apt tree, unpack into $unpacked/<version>.
bullseye() {
  local apt=$unpacked/.apt
  ls "$unpacked"/5.10.0-*-amd64/boot/vmlinuz-* >/dev/null 2>&1 && return 0
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
  local uris
  uris=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/*.sources 2>/dev/null
         awk '/^deb / {print ($2 ~ /^\[/) ? $3 : $2}' /etc/apt/sources.list 2>/dev/null || true)
  : > "$apt/sources.list"
  for u in $(echo "$uris" | grep -i debian | sort -u); do
    case $u in
      *security*) echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $u bullseye-security main" ;;
      *) echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $u bullseye main" ;;
    esac >> "$apt/sources.list"
  done
  [ -s "$apt/sources.list" ] || die "find Debian's mirrors: no Debian URI in /etc/apt/sources.list{,.d/*.sources}"
  local o=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt/lists"
           -o "Dir::Cache=$apt/cache" -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
  say "fetch Debian 11's package lists (bullseye, bullseye-security) into $apt"
  apt-get "${o[@]}" update -qq || die "fetch bullseye's package lists: apt-get update failed"
  local image version
  image=$(apt-cache "${o[@]}" search --names-only '^linux-image-5\.10\.0-[0-9]+-amd64$' | cut -d' ' -f1 | sort -V | tail -n 1)
  [ -n "$image" ] || die "find a Debian 11 kernel 5.10: no linux-image-5.10.0-N-amd64 in bullseye"
  version=${image#linux-image-}
  say "download $image and its headers (about 70 MB), unpack under $unpacked/$version"
  rm -f "$apt/debs"/*.deb
  (cd "$apt/debs" && apt-get "${o[@]}" download -qq "$image" "linux-headers-$version" \
      "linux-headers-${version%-amd64}-common" linux-kbuild-5.10) || die "download $image: apt-get download failed"
  local tmp="$unpacked/.$version.partial"
  rm -rf "$tmp" && mkdir -p "$tmp"
  for deb in "$apt/debs"/*.deb; do dpkg-deb -x "$deb" "$tmp" || die "unpack $deb: dpkg-deb failed"; done
  # the headers' links are absolute (/usr/src/...): make them point inside the unpacked tree
  ln -sfn "../../../usr/src/linux-headers-$version" "$tmp/lib/modules/$version/build"
  ln -sfn "../../../usr/src/linux-headers-${version%-amd64}-common" "$tmp/lib/modules/$version/source"
  rm -rf "${unpacked:?}/$version" && mv "$tmp" "$unpacked/$version"
  rm -f "$apt/debs"/*.deb
}

for series in "$@"; do
  case "$series" in
    5.10) bullseye; continue ;;
    6.1)  pattern='^linux-image-6\.1\.0-[0-9]+-amd64$' ;;
    6.12) pattern='^linux-image-6\.12\.[0-9]+\+deb12-amd64$' ;;
    *) die "kernel series $series: not one of 5.10 (Debian 11), 6.1, 6.12 (Debian 12)" ;;
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
