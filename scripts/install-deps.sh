#!/usr/bin/env bash
# Installs every Debian package ktricks needs to build, test, tour and benchmark.
# Idempotent: when everything is present it asks dpkg once and exits, without touching the network.
set -euo pipefail

packages=(
  # build
  g++ cmake ninja-build make pkgconf
  libcli11-dev libfmt-dev nlohmann-json3-dev
  # tests and fuzzing
  libgtest-dev libgmock-dev clang libclang-rt-14-dev
  # tools the tests, the tour and the benchmarks drive for real
  util-linux iproute2 procps python3 hyperfine strace
  # netlink (sockets, procwatch, netwatch) and rules files
  libmnl-dev libtomlplusplus-dev net-tools
  # handoff and jail: systemd protocols, load generators, uWSGI zerg, seccomp, containers
  libsystemd-dev python3-systemd wrk uwsgi uwsgi-plugin-python3 socat libseccomp-dev
  runc podman busybox-static
  # netwatch wifi test: a Debian kernel with mac80211_hwsim booted under qemu
  qemu-system-x86 hostapd wpasupplicant iw kmod ifplugd
  # netwatch wifi test: regulatory.db for the guest's cfg80211
  wireless-regdb
  # mysql-watch: a throwaway MariaDB per test
  mariadb-server mariadb-client libmariadb-dev
  # tvfs: FUSE, FFmpeg libraries, the anchors it is measured against, a DLNA server
  libfuse3-dev fuse3 libavformat-dev libavcodec-dev libavfilter-dev libavutil-dev
  libswscale-dev libswresample-dev ffmpeg ffmpegfs minidlna
  curl  # tvfs: the DLNA test's SOAP and HTTP Range client
  # benchmarks
  libbenchmark-dev
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null || true)
  [[ $status == ii* ]] || missing+=("$package")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

if ((EUID != 0)); then
  echo "install-deps: missing Debian packages: ${missing[*]}" >&2
  echo "install-deps: run as root (e.g. sudo make deps) to install them" >&2
  exit 77
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The tests start their own MariaDB and minidlna in private directories; the packages' system services
# are never used, so keep maintainer scripts from starting them (and binding ports) while installing.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
fi
trap '((own_policy)) && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
