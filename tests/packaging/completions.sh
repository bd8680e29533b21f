#!/usr/bin/env bash
# The generated bash, zsh and fish completions load without errors and offer what --help lists.
set -euo pipefail
build=$1
dir=$build/cli-docs/completions
fail() { echo "FAIL: $*" >&2; exit 1; }
subcommands=$("$KTRICKS" --help | sed -n '/^Subcommands:/,/^$/p' | awk 'NR > 1 && NF { print $1 }')

# bash: load, then ask the completion function what it offers.
bash_complete() {  # WORDS... (the last one is being completed)
  bash --norc --noprofile -c 'source "$1" 2>&1 || exit 9; shift
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _ktricks; printf "%s\n" "${COMPREPLY[@]}"' _ "$dir/ktricks.bash" "$@"
}
errors=$(bash --norc --noprofile -c 'source "$1" && complete -p ktricks >/dev/null' _ "$dir/ktricks.bash" 2>&1) \
  || fail "bash cannot load the completion: $errors"
[[ -z $errors ]] || fail "bash prints while loading the completion: $errors"
offered=$(bash_complete ktricks '')
for sub in $subcommands; do
  grep -qx "$sub" <<<"$offered" || fail "bash does not offer subcommand $sub"
  bash_complete ktricks "$sub" --he | grep -qx -- --help || fail "bash does not complete 'ktricks $sub --he'"
done
echo "bash: ok"

# zsh: syntax, then load it through compinit as a user's fpath would. -D: no dump file (`-d /dev/null`
# made zsh replace the host's /dev/null with a regular file holding the dump).
zsh -n "$dir/_ktricks" || fail "zsh syntax error in _ktricks"
out=$(zsh -f -c "fpath=($dir \$fpath); autoload -Uz compinit; compinit -u -D; whence -w _ktricks" 2>&1) \
  || fail "zsh cannot autoload _ktricks: $out"
[[ $out == "_ktricks: function" ]] || fail "zsh: unexpected '$out'"
echo "zsh: ok"

# fish: syntax, then complete a command line.
fish --no-execute "$dir/ktricks.fish" || fail "fish syntax error in ktricks.fish"
offered=$(fish --no-config -c "source $dir/ktricks.fish; complete -C 'ktricks '" | cut -f1)
for sub in $subcommands; do
  grep -qx "$sub" <<<"$offered" || fail "fish does not offer subcommand $sub"
done
echo "fish: ok"
