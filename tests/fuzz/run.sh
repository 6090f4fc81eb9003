#!/usr/bin/env bash
# Run one fuzz target for a bounded time:
#   run.sh TARGET SEEDS SECONDS [DICT [MIN_COVERAGE]]
# New inputs go to a temp dir (the committed seeds are only read); a
# crash, leak or timeout fails the test and its input is printed in base64
# and kept under the build tree's fuzz-artifacts/ to add to the seeds once
# fixed. A run that ends below MIN_COVERAGE edges (libFuzzer's cov) fails
# too: the target's inputs no longer reach the code it is for.
set -uo pipefail
target=$1 seeds=$2 secs=${3:-20} dict=${4:-} mincov=${5:-0}
dictarg=()
[ -n "$dict" ] && dictarg=(-dict="$dict")
work=$(mktemp -d /tmp/fg-fuzz.XXXXXX)
art="$(dirname "$target")/fuzz-artifacts/$(basename "$target")"
mkdir -p "$work/corpus" "$art"
rc=0
"$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dictarg[@]}" \
  -artifact_prefix="$art/" "$work/corpus" "$seeds" >"$work/log" 2>&1 || rc=$?
grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+[[:space:]]+DONE)' "$work/log" | sed 's/^/# /'
if [ $rc -ne 0 ]; then
  echo "FAIL - $(basename "$target") found a failing input (exit $rc):"
  grep -E 'ERROR:|SUMMARY:|Test unit written|Base64:' "$work/log" | head -n 10
  tail -n 40 "$work/log"
else
  # the coverage libFuzzer last reported (DONE, or the last status line)
  cov=$(grep -oE '^#[0-9]+[[:space:]]+[A-Z]+[[:space:]]+cov: [0-9]+' "$work/log" | tail -n 1 | grep -oE '[0-9]+$')
  if [ -z "$cov" ]; then
    echo "FAIL - $(basename "$target") reported no coverage; its log:"
    tail -n 40 "$work/log"
    rc=1
  elif [ "$cov" -lt "$mincov" ]; then
    echo "FAIL - $(basename "$target") reached $cov edges, below its floor of $mincov (tests/fuzz/meson.build):"
    echo "  its inputs stop short of the code it fuzzes; check that the seeds in $seeds still parse"
    echo "  and get past the target's first checks, then fix the target or its seeds"
    rc=1
  else
    echo "# coverage $cov edges (floor $mincov)"
  fi
fi
rm -rf "$work"
# libFuzzer's own exit code for a finding is 77, which meson reads as
# "skipped": any failure is 1 here.
[ $rc -eq 0 ] || exit 1
