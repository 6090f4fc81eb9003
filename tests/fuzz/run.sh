#!/usr/bin/env bash
# Run one fuzz target for a bounded time: run.sh TARGET SEEDS SECONDS [DICT].
# New inputs go to a temp dir (the committed seeds are only read); a
# crash, leak or timeout fails the test and its input is printed in base64
# and kept under the build tree's fuzz-artifacts/ to add to the seeds once
# fixed.
set -uo pipefail
target=$1 seeds=$2 secs=${3:-20} dict=${4:-}
dictarg=()
[ -n "$dict" ] && dictarg=(-dict="$dict")
work=$(mktemp -d /tmp/fg-fuzz.XXXXXX)
art="$(dirname "$target")/fuzz-artifacts/$(basename "$target")"
mkdir -p "$work/corpus" "$art"
rc=0
"$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dictarg[@]}" \
  -artifact_prefix="$art/" "$work/corpus" "$seeds" >"$work/log" 2>&1 || rc=$?
grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ *DONE)' "$work/log" | sed 's/^/# /'
if [ $rc -ne 0 ]; then
  echo "FAIL - $(basename "$target") found a failing input (exit $rc):"
  grep -E 'ERROR:|SUMMARY:|Test unit written|Base64:' "$work/log" | head -n 10
  tail -n 40 "$work/log"
fi
rm -rf "$work"
# libFuzzer's own exit code for a finding is 77, which meson reads as
# "skipped": any failure is 1 here.
[ $rc -eq 0 ] || exit 1
