#!/usr/bin/env bash
# Another C++ project finds the installed libktricks with find_package(ktricks) and with
# pkg-config, builds against it and runs.
set -euo pipefail
build=$1 source=$2
scratch=$(mktemp -d /tmp/ktricks-consumer.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$scratch/prefix" --component dev >/dev/null
cmake -S "$source/examples/consumer" -B "$scratch/cmake-build" -G Ninja \
      -DCMAKE_PREFIX_PATH="$scratch/prefix" >"$scratch/configure.log" 2>&1 \
  || { cat "$scratch/configure.log"; fail "find_package(ktricks) consumer does not configure"; }
cmake --build "$scratch/cmake-build" >"$scratch/build.log" 2>&1 || { cat "$scratch/build.log"; fail "consumer does not build"; }
out=$("$scratch/cmake-build/single_instance" "ktricks-consumer-$$")
[[ $out == holding* ]] || fail "consumer printed '$out'"
echo "find_package: $out"

export PKG_CONFIG_PATH=$scratch/prefix/lib/pkgconfig
flags=$(pkg-config --define-prefix --cflags --libs ktricks) || fail "pkg-config ktricks failed"
g++ -o "$scratch/pc-consumer" "$source/examples/consumer/main.cpp" $flags 2>"$scratch/pc.log" \
  || { cat "$scratch/pc.log"; fail "pkg-config consumer does not build with: $flags"; }
out=$("$scratch/pc-consumer" "ktricks-consumer-pc-$$")
[[ $out == holding* ]] || fail "pkg-config consumer printed '$out'"
echo "pkg-config: $out"
