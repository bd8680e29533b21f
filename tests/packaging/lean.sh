#!/usr/bin/env bash
# The front door stays lean (docs/architecture.md): `ktricks` and the light subcommands built into it
# never map FFmpeg, libfuse or libmariadb; each helper program maps only its own heavy libraries.
# Checked three ways: DT_NEEDED (readelf), the whole dependency closure (ldd), and the files a real
# run opens (strace), for the light subcommands actually doing work.
set -euo pipefail
build=$1
ktricks=$build/ktricks helpers=$build/libexec/ktricks
fail() { echo "FAIL: $*" >&2; exit 1; }
av='lib(avformat|avcodec|avfilter|avutil|avdevice|swscale|swresample|postproc)\.so'
fuse='libfuse3?\.so' mariadb='libmariadb\.so'

needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
# refuse BINARY PATTERN WHAT: fail if BINARY's DT_NEEDED or its ldd closure matches PATTERN.
refuse() {
  local hit
  hit=$(needed "$1" | grep -E "$2" || true)
  [[ -z $hit ]] || fail "$(basename "$1") has $3 in DT_NEEDED: $(echo $hit)"
  hit=$(ldd "$1" | grep -E "$2" || true)
  [[ -z $hit ]] || fail "$(basename "$1") maps $3 through a dependency: $(echo $hit)"
}

for helper in ktricks-tvfs ktricks-mysql-watch ktricks-tour; do
  [[ -x $helpers/$helper ]] || fail "helper $helpers/$helper is missing"
done
refuse "$ktricks" "$av|$fuse|$mariadb" "a heavy library"
refuse "$helpers/ktricks-mysql-watch" "$av|$fuse" "FFmpeg or libfuse"
refuse "$helpers/ktricks-tvfs" "$mariadb" "libmariadb"
needed "$helpers/ktricks-tvfs" | grep -qE "$av" || fail "ktricks-tvfs does not link FFmpeg: is it the right binary?"
# Start-up budget (bench/startup.sh): the front door loads libc and libmnl only. libstdc++/libgcc are
# linked in, libseccomp comes from its archive when Debian ships one (it does), and nothing needs libm.
if [[ -z ${KTRICKS_SANITIZED:-} ]]; then
  extra=$(needed "$ktricks" | grep -vE '^(libc\.so\.6|libmnl\.so\.0|ld-linux-x86-64\.so\.2)$' || true)
  [[ -z $extra ]] || fail "ktricks has more than libc and libmnl in DT_NEEDED: $(echo $extra)"
fi
# No <iostream> static initialiser in the front door (src/cli/cli11.hpp): with libstdc++ linked in, each
# one builds the standard streams before main() on every run. Only checkable while symbols are present.
if nm "$ktricks" >/dev/null 2>&1 && nm "$ktricks" | grep -q '_ZStL8__ioinit'; then
  fail "ktricks runs <iostream>'s static initialiser: a front-door file includes <iostream> (use cli/cli11.hpp)"
fi
echo "ktricks DT_NEEDED: $(needed "$ktricks" | tr '\n' ' ')"
echo "ktricks: $(ldd "$ktricks" | wc -l) objects mapped (ldd)"

# What real runs open: the light subcommands doing their work.
scratch=$(mktemp -d /tmp/ktricks-lean.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
trace() {  # NAME ARGS...: run ktricks ARGS under strace, fail if it opened a heavy library
  local name=$1; shift
  timeout 20 strace -f -qq -e trace=openat,open -o "$scratch/$name.trace" "$ktricks" "$@" >/dev/null 2>&1 || true
  [[ -s $scratch/$name.trace ]] || fail "strace recorded nothing for ktricks $*"
  local hit
  hit=$(grep -E "$av|$fuse|$mariadb" "$scratch/$name.trace" | grep -v ENOENT || true)
  [[ -z $hit ]] || fail "ktricks $* opened: $hit"
  echo "ktricks $*: no heavy library opened"
}
trace version --version
trace once once "ktricks-lean-$$" -- true
trace sockets sockets -tan
trace procwatch procwatch --help
trace netwatch netwatch --help
trace serve serve --help
trace jail jail --help

# The heavy subcommands still answer through the front door, exactly as before.
"$ktricks" tvfs --help | grep -q '^Usage: ktricks tvfs' || fail "ktricks tvfs --help does not reach the helper"
"$ktricks" mysql-watch --help | grep -q '^Usage: ktricks mysql-watch' || fail "ktricks mysql-watch --help"
"$ktricks" tour --list >/dev/null || fail "ktricks tour --list"
status=0; "$ktricks" tvfs --no-such-flag >/dev/null 2>"$scratch/err" || status=$?
[[ $status == 64 ]] || fail "ktricks tvfs --no-such-flag exited $status, not 64"
grep -q '^ktricks tvfs: ' "$scratch/err" || fail "tvfs usage error does not name 'ktricks tvfs': $(cat "$scratch/err")"
# A missing helper is one line and EX_UNAVAILABLE, not a crash.
mkdir "$scratch/bin"; cp "$ktricks" "$scratch/bin/ktricks"
status=0; "$scratch/bin/ktricks" tvfs --help >/dev/null 2>"$scratch/err" || status=$?
[[ $status == 69 ]] || fail "a missing helper exited $status, not 69"
grep -q 'ktricks-tvfs' "$scratch/err" || fail "a missing helper is not named: $(cat "$scratch/err")"
echo "helpers: ok"
