#!/usr/bin/env bash
# Every subcommand has a man page generated from its --help; each renders without a groff/man
# warning and has EXAMPLES and EXIT STATUS sections.
set -euo pipefail
build=$1
pages=$build/cli-docs/man
fail() { echo "FAIL: $*" >&2; exit 1; }

subcommands=$("$KTRICKS" --help | sed -n '/^Subcommands:/,/^$/p' | awk 'NR > 1 && NF { print $1 }')
[[ -n $subcommands ]] || fail "no subcommands in ktricks --help"
for page in ktricks $(printf 'ktricks-%s\n' $subcommands); do
  file=$pages/$page.1
  [[ -f $file ]] || fail "$file missing"
  warnings=$(MANWIDTH=80 man --warnings -l "$file" 2>&1 >/dev/null) || fail "man -l $file failed: $warnings"
  [[ -z $warnings ]] || fail "man -l $file warns: $warnings"
  grep -q '^\.SH EXAMPLES' "$file" || fail "$file has no EXAMPLES section"
  grep -q '^\.SH "\?EXIT STATUS' "$file" || fail "$file has no EXIT STATUS section"
  echo "ok $page"
done
# Every option of every subcommand is documented in its page.
for sub in $subcommands; do
  for flag in $("$KTRICKS" "$sub" --help | grep -oE '^\s+(-[a-zA-Z0-9],)?--[a-z0-9-]+' | grep -oE -- '--[a-z0-9-]+'); do
    grep -qF -- "${flag//-/\\-}" "$pages/ktricks-$sub.1" || fail "ktricks-$sub.1 does not mention $flag"
  done
done
echo "man pages: ok"
