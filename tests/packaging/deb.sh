#!/usr/bin/env bash
# `make deb` output: both packages build, lintian finds no error, the unpacked binary runs, and
# `dpkg -i` on this machine installs a working ktricks (purged again afterwards).
set -euo pipefail
build=$1
scratch=$(mktemp -d /tmp/ktricks-deb.XXXXXX)
installed_by_us=0
cleanup() {
  ((installed_by_us)) && dpkg --purge ktricks >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

(cd "$build" && cpack -G DEB -B "$scratch/out" >"$scratch/cpack.log" 2>&1) || { cat "$scratch/cpack.log"; fail "cpack failed"; }
runtime=$(ls "$scratch"/out/ktricks_*.deb) dev=$(ls "$scratch"/out/libktricks-dev_*.deb)
echo "built $(basename "$runtime") $(basename "$dev")"

# Runtime dependencies come from dpkg-shlibdeps, not from a hand-kept list.
depends=$(dpkg-deb -f "$runtime" Depends)
[[ $depends == *libc6* ]] || fail "Depends lacks libc6 (shlibdeps did not run?): $depends"
echo "Depends: $depends"

command -v lintian >/dev/null || fail "lintian is not installed (scripts/install-deps.sh installs it)"
lintian_out=$(lintian --allow-root "$runtime" "$dev" 2>&1 || true)
echo "$lintian_out"
! grep -q '^E:' <<<"$lintian_out" || fail "lintian reports errors"

dpkg -x "$runtime" "$scratch/root"
"$scratch/root/usr/bin/ktricks" --version | grep -q '^ktricks ' || fail "unpacked ktricks --version"
"$scratch/root/usr/bin/ktricks" --help >/dev/null || fail "unpacked ktricks --help"
for sub in $("$scratch/root/usr/bin/ktricks" --help | sed -n '/^Subcommands:/,/^$/p' | awk 'NR > 1 && NF { print $1 }'); do
  [[ -f $scratch/root/usr/share/man/man1/ktricks-$sub.1.gz ]] || fail "no man page for $sub in the package"
done
[[ -f $scratch/root/usr/share/bash-completion/completions/ktricks ]] || fail "no bash completion in the package"
# The heavy subcommands are helper programs the front door finds relative to itself (../libexec/ktricks).
for helper in ktricks-tvfs ktricks-mysql-watch ktricks-tour; do
  [[ -x $scratch/root/usr/libexec/ktricks/$helper ]] || fail "no $helper in /usr/libexec/ktricks"
done
"$scratch/root/usr/bin/ktricks" tvfs --help | grep -q '^Usage: ktricks tvfs' || fail "unpacked ktricks tvfs --help does not reach its helper"
"$scratch/root/usr/bin/ktricks" mysql-watch --help | grep -q '^Usage: ktricks mysql-watch' || fail "unpacked ktricks mysql-watch --help"

if dpkg-query -W -f='${Status}' ktricks 2>/dev/null | grep -q 'ok installed'; then
  echo "ktricks is already installed on this machine: not touching it (dpkg -i check skipped)"
else
  dpkg -i "$runtime" >"$scratch/dpkg.log" 2>&1 || { cat "$scratch/dpkg.log"; fail "dpkg -i failed"; }
  installed_by_us=1
  /usr/bin/ktricks --version | grep -q '^ktricks ' || fail "installed ktricks --version"
  /usr/bin/ktricks tvfs --help >/dev/null || fail "installed ktricks tvfs --help"
  echo "dpkg -i: $(/usr/bin/ktricks --version)"
fi
echo "deb: ok"
