# `fleetgate COMMAND [SUB] --help` prints that command's own usage, options
# and example and exits 0; unknown options and commands are named with the
# closest valid one; the daemons' --help exit 0.
source "$(dirname "$0")/lib.sh"

n=0
while read -r cmd sub; do
  n=$((n + 1))
  rc=0
  out=$("$FLEETGATE" $cmd $sub --help 2>&1) || rc=$?
  expect_eq "fleetgate $cmd $sub --help exits 0" "$rc" 0
  expect_match "fleetgate $cmd $sub --help prints its own usage" "$(head -n 1 <<<"$out")" \
    "^usage: fleetgate $cmd${sub:+ $sub}( |\$)"
  expect_match "fleetgate $cmd $sub --help has an example" "$out" "^example:"
  expect_eq "fleetgate $cmd $sub --help is about that command only" \
    "$(grep -c '^usage:' <<<"$out")" 1
done < <("$FLEETGATE" commands)
[ "$n" -gt 10 ] && ok "$n commands listed" || fail "only $n commands listed"

# -h after other options, and a command with its subcommands.
out=$("$FLEETGATE" token create --state /nonexistent -h)
expect_match "-h anywhere on the line" "$out" "^usage: fleetgate token create"
out=$("$FLEETGATE" device --help)
expect_eq "device --help covers each device subcommand" "$(grep -c '^usage: fleetgate device ' <<<"$out")" 6

rc=0; out=$("$FLEETGATE" token create --state "$T" --grop laptops 2>&1) || rc=$?
expect_eq "an unknown option is a usage error" "$rc" 2
expect_match "and names the closest one" "$out" "unknown option '--grop'; did you mean --group\\?"
rc=0; out=$("$FLEETGATE" audit tail --state "$T" --folow 2>&1) || rc=$?
expect_match "--folow: did you mean --follow" "$out" "did you mean --follow\\?"
rc=0; out=$("$FLEETGATE" token list --state "$T" --zzzzzzzz 2>&1) || rc=$?
expect_match "nothing close: no guess" "$out" "unknown option '--zzzzzzzz'; see"
rc=0; out=$("$FLEETGATE" devise list 2>&1) || rc=$?
expect_match "an unknown command names the closest" "$out" "unknown command 'devise'; did you mean 'device'\\?"
rc=0; out=$("$FLEETGATE" audit tail --state "$T" -n 2>&1) || rc=$?
expect_match "a missing value is named" "$out" "option -n needs a value"

# Bash completion, driven as bash drives it.
comp() { # comp WORDS...: the completions for the last word
  bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _fleetgate; printf "%s\n" "${COMPREPLY[@]}"' \
    _ "$FG_SOURCE_ROOT/dist/fleetgate.bash-completion" "$@"
}
PATH="$(dirname "$FLEETGATE"):$PATH"
expect_match "completion: commands" "$(comp fleetgate to)" "^token\$"
expect_eq "completion: subcommands" "$(comp fleetgate token "" | sort | tr '\n' ' ')" "create list revoke show "
expect_match "completion: options of the subcommand" "$(comp fleetgate token create --gr)" "^--group\$"
expect_eq "completion: no option of another command" "$(comp fleetgate token list --foll)" ""

for b in "$FLEETGATED" "$AGENT"; do
  rc=0; out=$("$b" --help 2>&1) || rc=$?
  expect_eq "$(basename "$b") --help exits 0" "$rc" 0
  expect_match "$(basename "$b") --help prints its usage" "$out" "^usage: $(basename "$b")"
done
finish
