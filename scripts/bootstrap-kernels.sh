#!/usr/bin/env bash
# What the kernel matrix needs, beyond scripts/bootstrap.sh: QEMU, busybox (virtme-ng's
# initramfs), Debian's kernel images with their headers (bcc compiles against them inside
# the guest), and virtme-ng in .venv. A quick no-op when all is there.
#   scripts/bootstrap-kernels.sh 5.10 6.1 6.12
# The kernels are downloaded and unpacked, never installed: an installed kernel would become
# the host's next boot kernel on a GRUB machine. Each goes under /var/lib/xdplab-kernels/
# <version>/ (image, modules, headers; not /var/cache: virtme-ng hides it behind a tmpfs in
# the guest), where virtme-ng finds the modules beside the image. 6.1 and 6.12 are Debian
# 12's, fetched with the system's own apt sources; 5.10 is Debian 11's (bullseye), fetched
# with a private apt configuration (the system's own mirrors, the bullseye suites; the
# system's sources and package database stay as they are). A kernel already installed in
# /boot with its headers is used as it is.
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

# Debian 11's apt options: a private tree fetching the bullseye suites from the system's mirrors.
bullseye_apt() {
  local apt=$unpacked/.apt
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
  o=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt/lists"
     -o "Dir::Cache=$apt/cache" -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
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
  say "fetch Debian 11's package lists (bullseye, bullseye-security) into $apt"
  apt-get "${o[@]}" update -qq || die "fetch bullseye's package lists: apt-get update failed"
}

# The newest kernel of a series (the image package matching $2), downloaded with the apt
# options in $o and unpacked into $unpacked/<version> with its headers.
unpack() {
  local series=$1 pattern=$2 image version deps
  image=$(apt-cache "${o[@]}" search --names-only "$pattern" | cut -d' ' -f1 | sort -V | tail -n 1)
  [ -n "$image" ] || die "find a Debian kernel $series: no package matches $pattern"
  version=${image#linux-image-}
  # the headers' own: linux-headers-<version>-common (or -<base>-common) and linux-kbuild-*
  deps=$(apt-cache "${o[@]}" depends "linux-headers-$version" | awk '/Depends: linux-(headers|kbuild)-/ {print $2}')
  local debs="$unpacked/.debs" tmp="$unpacked/.$version.partial"
  say "download $image, linux-headers-$version and $(echo $deps | tr '\n' ' ')(70-100 MB); unpack under $unpacked/$version"
  rm -rf "$debs" "$tmp" && mkdir -p "$debs" "$tmp"
  # shellcheck disable=SC2086
  (cd "$debs" && apt-get "${o[@]}" download -qq "$image" "linux-headers-$version" $deps) \
    || die "download $image: apt-get download failed"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$tmp" || die "unpack $deb: dpkg-deb failed"; done
  # the headers' links are absolute (/usr/src/...): make them point inside the unpacked tree
  local common
  common=$(cd "$tmp/usr/src" && ls -d linux-headers-*-common* 2>/dev/null | head -n 1)
  [ -n "$common" ] || die "unpack linux-headers-$version: no linux-headers-*-common among $deps"
  ln -sfn "../../../usr/src/linux-headers-$version" "$tmp/lib/modules/$version/build"
  ln -sfn "../../../usr/src/$common" "$tmp/lib/modules/$version/source"
  rm -rf "${unpacked:?}/$version" && mv "$tmp" "$unpacked/$version"
  rm -rf "$debs"
}

for series in "$@"; do
  case "$series" in
    5.10) pattern='^linux-image-5\.10\.0-[0-9]+-amd64$' ;;
    6.1)  pattern='^linux-image-6\.1\.0-[0-9]+-amd64$' ;;
    6.12) pattern='^linux-image-6\.12\.[0-9]+\+deb12-amd64$' ;;
    *) die "kernel series $series: not one of 5.10 (Debian 11), 6.1, 6.12 (Debian 12)" ;;
  esac
  re=${pattern#^linux-image-}
  re=${re%\$}
  have=$(ls /boot/vmlinuz-* 2>/dev/null | sed 's|/boot/vmlinuz-||' | grep -xE "$re" | sort -V | tail -n 1 || true)
  if [ -n "$have" ] && [ -e "/lib/modules/$have/build/include" ]; then continue; fi    # installed in /boot
  if ls "$unpacked"/*/boot/vmlinuz-* 2>/dev/null | sed 's|.*/vmlinuz-||' | grep -qxE "$re"; then continue; fi
  mkdir -p "$unpacked"
  if [ "$series" = 5.10 ]; then
    bullseye_apt
  else
    o=(-o APT::Sandbox::User=root)
    if [ "$updated" = 0 ]; then apt-get update -qq || die "apt-get update failed"; updated=1; fi
  fi
  unpack "$series" "$pattern"
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$updated" = 1 ] || apt-get update -qq
  say "apt-get install ${need[*]}"
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
