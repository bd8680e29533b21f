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
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
