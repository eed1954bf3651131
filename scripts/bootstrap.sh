#!/usr/bin/env bash
# Install what the lab needs and is missing; a quick no-op when everything is there.
# Called by `make scenarios`, `make test`, `.ci/run` and the Vagrantfile's provisioner.
#   1. Debian packages (bcc for Debian's python3, bpftool, iproute2, ethtool, tcpdump, headers,
#      clang and libbpf for the ELF build of the forwarder, vagrant to validate the Vagrantfile,
#      Go with cilium/ebpf and netlink for the offline build of build/l2fwdctl)
#   2. kernel headers that bcc finds for the running kernel (see shared KERNEL_NOTES)
#   3. bpffs, tracefs and debugfs mounted
#   4. .venv (Debian's python3 + system site packages, so `import bcc` works) with requirements.txt
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "bootstrap: $*" >&2; }
die() { echo "bootstrap: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "install lab prerequisites: must run as root (the lab creates namespaces and attaches XDP); rerun with sudo"
command -v dpkg-query >/dev/null || die "install lab prerequisites: not a Debian system (no dpkg-query); install python3-bpfcc, bpftool, iproute2, ethtool, tcpdump and kernel headers by hand"

PACKAGES=(python3-bpfcc python3-venv bpftool iproute2 ethtool tcpdump kmod clang libbpf-dev libbpf1 make vagrant
          golang-go golang-github-cilium-ebpf-dev golang-github-vishvananda-netlink-dev)
release=$(uname -r)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Headers: the running kernel's own package if Debian has it, else the generic
# linux-headers-amd64 linked under /lib/modules/$(uname -r) (a custom kernel has none).
headers_pkg=""
if [ ! -e "/lib/modules/$release/build/include" ]; then
  headers_pkg="linux-headers-$release"
fi

apt_updated=0
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" = 0 ]; then
    say "apt-get update"
    apt-get update -qq || die "update Debian package lists: apt-get update failed; check the package mirror in /etc/apt/sources.list"
    apt_updated=1
  fi
  say "apt-get install $*"
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "install Debian packages $*: apt-get failed; run 'apt-get install $*' to see why"
}

[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

if [ -n "$headers_pkg" ]; then
  if [ "$apt_updated" = 0 ] && ! apt-cache show "$headers_pkg" >/dev/null 2>&1; then
    apt-get update -qq || true; apt_updated=1
  fi
  if apt-cache show "$headers_pkg" >/dev/null 2>&1; then
    apt_install "$headers_pkg"
  else
    dpkg-query -W -f='${Status}' linux-headers-amd64 2>/dev/null | grep -q "install ok installed" \
      || apt_install linux-headers-amd64
    amd64=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
    common=${amd64%-amd64}-common
    [ -d "$amd64" ] && [ -d "$common" ] \
      || die "link kernel headers for $release: no /usr/src/linux-headers-*-amd64 and -common pair after installing linux-headers-amd64"
    say "link /lib/modules/$release/{build,source} -> $amd64, $common (custom kernel without headers)"
    mkdir -p "/lib/modules/$release"
    ln -sfn "$amd64" "/lib/modules/$release/build"
    ln -sfn "$common" "/lib/modules/$release/source"
  fi
fi

mount_if_missing() {  # type dir
  if ! mountpoint -q "$2"; then
    mkdir -p "$2"
    say "mount -t $1 $1 $2"
    mount -t "$1" "$1" "$2" || die "mount $1 on $2: failed; the kernel needs CONFIG_${1^^}_FS"
  fi
}
mount_if_missing bpf /sys/fs/bpf
mount_if_missing tracefs /sys/kernel/tracing
mount_if_missing debugfs /sys/kernel/debug

# The virtual environment: Debian's python3 (bcc is installed for it) with system site packages.
want=$(sha256sum requirements.txt | cut -c1-16)
if [ "$(cat .venv/.requirements 2>/dev/null)" != "$want" ]; then
  if [ ! -x .venv/bin/python ]; then
    say "create .venv from /usr/bin/python3 (with system site packages for bcc)"
    /usr/bin/python3 -m venv --system-site-packages .venv \
      || die "create .venv: /usr/bin/python3 -m venv failed; is python3-venv installed?"
  fi
  say "pip install -r requirements.txt"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt \
    || die "install Python packages: pip failed; run '.venv/bin/pip install -r requirements.txt' to see why"
  .venv/bin/python -c 'import bcc' 2>/dev/null \
    || die "import bcc in .venv: failed; python3-bpfcc must be installed for /usr/bin/python3"
  echo "$want" > .venv/.requirements
fi
