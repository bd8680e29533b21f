#!/usr/bin/env bash
# The shipped systemd units pass `systemd-analyze verify` (with ExecStart pointed at the binary
# under test, since verify checks that the command exists), are Type=notify and are hardened.
set -euo pipefail
source_dir=$2
scratch=$(mktemp -d /tmp/ktricks-units.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze is not installed"; exit 77; }

# verify also runs man(1) on Documentation=man:... entries: point it at the generated pages.
mkdir -p "$scratch/man/man1"
cp "$1"/cli-docs/man/*.1 "$scratch/man/man1/"
export MANPATH=$scratch/man

# System units in packaging/systemd, user units (systemctl --user) in packaging/systemd/user.
units=("$source_dir"/packaging/systemd/*.service "$source_dir"/packaging/systemd/user/*.service)
[[ -e ${units[0]} ]] || fail "no units in packaging/systemd"
for unit in "${units[@]}"; do
  [[ -e $unit ]] || continue
  name=$(basename "$unit")
  scope=()
  [[ $unit == */user/* ]] && scope=(--user) && name=user-$name
  # A user manager needs a runtime directory, which a root shell or CI has none of.
  mkdir -p -m 0700 "$scratch/runtime"
  sed "s|/usr/bin/ktricks|$KTRICKS|g" "$unit" >"$scratch/$name"
  out=$(cd "$scratch" && XDG_RUNTIME_DIR=$scratch/runtime \
    systemd-analyze "${scope[@]}" verify "./$name" 2>&1) ||
    fail "systemd-analyze ${scope[*]} verify $name: $out"
  [[ -z $out ]] || fail "systemd-analyze verify $name warns: $out"
  grep -qx 'Type=notify' "$unit" || fail "$name is not Type=notify"
  grep -qx 'NoNewPrivileges=yes' "$unit" || fail "$name lacks NoNewPrivileges=yes"
  grep -q '^CapabilityBoundingSet=' "$unit" || fail "$name has no CapabilityBoundingSet"
  # The subcommand it runs must exist in this binary.
  sub=$(sed -n 's|^ExecStart=/usr/bin/ktricks \([a-z-]*\).*|\1|p' "$unit")
  "$KTRICKS" "$sub" --help >/dev/null || fail "$name runs 'ktricks $sub', which does not exist"
  echo "ok $name (ktricks $sub)"
done
