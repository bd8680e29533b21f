#!/usr/bin/env bash
# A short libFuzzer run of one target, as a ctest case: seeds from the repository (read-only), new
# inputs into a scratch folder that is removed afterwards. Exit 77 (ctest: skipped) when the
# libFuzzer build is missing, so a plain `ctest` without `make fuzz` says so instead of failing.
set -euo pipefail
fuzzer=$1 seconds=$2 seeds=$3
if [[ ! -x $fuzzer ]]; then
  echo "fuzz-smoke: $fuzzer is not built (run 'make fuzz', which 'make test' does)" >&2
  exit 77
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$scratch/" "$scratch" "$seeds" 2>"$scratch/log" || {
  status=$?
  tail -n 40 "$scratch/log" >&2
  for crash in "$scratch"/crash-* "$scratch"/leak-* "$scratch"/timeout-*; do
    [[ -e $crash ]] && { echo "reproducer (base64):" >&2; base64 -w0 "$crash" >&2; echo >&2; }
  done
  exit "$status"
}
grep -E '^stat::number_of_executed_units|^Done' "$scratch/log" || true
