#!/usr/bin/env bash
# Another C++ project finds one component of the installed libktricks (once) with
# find_package(ktricks COMPONENTS once) and with pkg-config (ktricks-once), builds against it and runs;
# the program it gets needs only that component's libraries (DT_NEEDED): no FFmpeg, libfuse, libmariadb.
set -euo pipefail
build=$1 source=$2
scratch=$(mktemp -d /tmp/ktricks-consumer.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
heavy='lib(av|sw|postproc)[a-z]*\.so|libfuse3?\.so|libmariadb|libmnl|libseccomp|libtomlplusplus|libz\.so'

# needed_heavy BINARY: the heavy libraries in BINARY's DT_NEEDED, one a line (empty when lean).
needed_heavy() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | grep -E "$heavy" || true; }

cmake --install "$build" --prefix "$scratch/prefix" --component dev >/dev/null
for component in core once handoff jail netlink sockets procwatch netwatch mysqlwatch tvfs; do
  [[ -f $scratch/prefix/lib/libktricks-$component.a ]] || fail "libktricks-$component.a not installed"
  [[ -f $scratch/prefix/lib/pkgconfig/ktricks-$component.pc ]] || fail "ktricks-$component.pc not installed"
done

cmake -S "$source/examples/consumer" -B "$scratch/cmake-build" -G Ninja \
      -DCMAKE_PREFIX_PATH="$scratch/prefix" >"$scratch/configure.log" 2>&1 \
  || { cat "$scratch/configure.log"; fail "find_package(ktricks COMPONENTS once) consumer does not configure"; }
cmake --build "$scratch/cmake-build" >"$scratch/build.log" 2>&1 || { cat "$scratch/build.log"; fail "consumer does not build"; }
out=$("$scratch/cmake-build/single_instance" "ktricks-consumer-$$")
[[ $out == holding* ]] || fail "consumer printed '$out'"
extra=$(needed_heavy "$scratch/cmake-build/single_instance")
[[ -z $extra ]] || fail "find_package consumer of 'once' links $(echo $extra)"
echo "find_package: $out; DT_NEEDED: $(readelf -d "$scratch/cmake-build/single_instance" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"

# A component that is not there is a clear configure error, not a link error later.
mkdir -p "$scratch/bad"
printf 'cmake_minimum_required(VERSION 3.25)\nproject(bad LANGUAGES CXX)\nfind_package(ktricks REQUIRED COMPONENTS nosuch)\n' \
  >"$scratch/bad/CMakeLists.txt"
if cmake -S "$scratch/bad" -B "$scratch/bad/build" -DCMAKE_PREFIX_PATH="$scratch/prefix" >"$scratch/bad.log" 2>&1; then
  fail "find_package(ktricks COMPONENTS nosuch) configured"
fi
grep -q 'nosuch' "$scratch/bad.log" || { cat "$scratch/bad.log"; fail "the error does not name the missing component"; }

# Every component together, the way a program using all of them would.
printf 'cmake_minimum_required(VERSION 3.25)\nproject(all LANGUAGES CXX)\nfind_package(ktricks REQUIRED)\nif(NOT TARGET ktricks::ktricks OR NOT TARGET ktricks::tvfs)\n  message(FATAL_ERROR "no ktricks::ktricks")\nendif()\n' \
  >"$scratch/bad/CMakeLists.txt"
cmake -S "$scratch/bad" -B "$scratch/all-build" -DCMAKE_PREFIX_PATH="$scratch/prefix" >"$scratch/all.log" 2>&1 \
  || { cat "$scratch/all.log"; fail "find_package(ktricks) with every component does not configure"; }

export PKG_CONFIG_PATH=$scratch/prefix/lib/pkgconfig
flags=$(pkg-config --define-prefix --cflags --libs ktricks-once) || fail "pkg-config ktricks-once failed"
g++ -o "$scratch/pc-consumer" "$source/examples/consumer/main.cpp" $flags 2>"$scratch/pc.log" \
  || { cat "$scratch/pc.log"; fail "pkg-config consumer does not build with: $flags"; }
out=$("$scratch/pc-consumer" "ktricks-consumer-pc-$$")
[[ $out == holding* ]] || fail "pkg-config consumer printed '$out'"
extra=$(needed_heavy "$scratch/pc-consumer")
[[ -z $extra ]] || fail "pkg-config consumer of ktricks-once links $(echo $extra)"
echo "pkg-config: $out; flags: $flags"
