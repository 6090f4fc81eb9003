#!/usr/bin/env bash
# Storage faults under the gateway (docs/reliability.md): each write and
# each sync of the store (fleetgate.db and its WAL) that an enrollment
# makes fails in turn, with EIO (a failing disk) and ENOSPC (a full one).
# The four durable steps of a local-CA enrollment are admission, the
# serial's reservation, the write-ahead record of the to-be-signed
# certificate and the certificate's record with its audit record. For
# every failure: the device gets a retryable answer and no certificate,
# the store stays consistent, and the same request succeeds once the disk
# is back; a disk that stays full fails every request the same way and
# the gateway stays up until it has room again. The per-step faults hit
# the worker threads (fg-worker*), where requests are served; the WAL's
# checkpoints (thread fg-checkpoint) fail on their own below, and lose
# nothing.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/fault.inc.sh"

gw_init
fault_init fleetgate.db
FLEETGATED=$(fault_wrap fleetgated "$FLEETGATED")
gw_start
bundle b --uses 400 --ttl 1h

# log_within SECONDS REGEX: the gateway log has a line matching REGEX
# within SECONDS
log_within() {
  local i
  for i in $(seq $(($1 * 10))); do grep -Eq -- "$2" "$T/gw.log" && return 0; sleep 0.1; done
  return 1
}

# step_of FILE: which durable step an agent's output says failed
step_of() {
  if grep -q "could not record the request" "$1"; then echo admission
  elif grep -q "cannot reserve serial" "$1"; then echo serial
  elif grep -q "before signing; nothing was signed" "$1"; then echo write-ahead
  elif grep -q "could not record the certificate" "$1"; then echo certificate
  else echo "unknown"
  fi
}

# all_steps: every durable step is in $steps
all_steps() {
  local s
  for s in admission serial write-ahead certificate; do
    case "$steps" in *" $s "*) ;; *) return 1 ;; esac
  done
}

# The Nth call fails, for N = 0, 1, ... until an enrollment needs fewer.
# Which step the Nth call belongs to can move by one: a commit that starts
# the WAL over after a checkpoint (fg-checkpoint runs them once a second)
# also syncs the WAL's header. So a sweep that missed a step is run again,
# up to six sweeps (a shift at the last step's call hides that step, and
# under the sanitizers, with slower enrollments and so more checkpoints
# between them, three sweeps in a row have done so); every failure in
# every sweep is checked the same way.
n=0
for mode in "sync EIO" "write ENOSPC" "write EIO" "sync ENOSPC"; do
  set -- $mode
  op=$1 err=$2
  steps=" "
  bad_answer=0 leaked=0 not_retried=0 calls=0
  for sweep in 1 2 3 4 5 6; do
    for k in $(seq 0 200); do
      n=$((n + 1))
      cp "$T/b.bundle" "$T/a$n.bundle"
      agent_conf "a$n" >/dev/null
      certs_before=$(sql 'select count(*) from certificates')
      fault_set "op=$op err=$err skip=$k count=1 thread=fg-worker"
      rc=0; agent "a$n" || rc=$?
      if [ "$(fault_failed)" = 0 ]; then
        # the enrollment needed fewer than k+1 such calls: all were tried
        expect_eq "$op $err: the enrollment past the last $op succeeded" "$rc" "0"
        break
      fi
      fault_clear
      calls=$((calls + 1))
      step=$(step_of "$T/a$n.out")
      case "$steps" in *" $step "*) ;; *) steps="$steps$step " ;; esac
      # exit 3 is the agent's "retry later"; the answer names what failed
      if [ "$rc" != 3 ] || [ "$step" = unknown ]; then
        bad_answer=$((bad_answer + 1)); echo "# $op $err #$k: agent exit $rc:"; cat "$T/a$n.out"
      fi
      [ -s "$(crt "a$n")" ] && leaked=$((leaked + 1))
      [ "$(sql 'select count(*) from certificates')" = "$certs_before" ] || leaked=$((leaked + 1))
      # the disk is back: the same request (the agent keeps its id) completes
      agent "a$n" || { not_retried=$((not_retried + 1)); cat "$T/a$n.out"; }
    done
    echo "# $op $err: sweep $sweep: $k calls failed one at a time; steps hit so far:$steps"
    all_steps && break
  done
  expect_eq "$op $err: every failure answered retryable, naming the step" "$bad_answer" "0"
  expect_eq "$op $err: no certificate reached a device or the store at a failed step" "$leaked" "0"
  expect_eq "$op $err: every request succeeded once the disk was back" "$not_retried" "0"
  for s in admission serial write-ahead certificate; do
    expect_match "$op $err: the $s step was failed" "$steps" " $s "
  done
  store_consistent "after $op $err"
done
expect_eq "one certificate per device" "$(sql 'select count(*) from certificates')" "$n"
expect_eq "one device per agent" "$(sql 'select count(*) from devices')" "$n"
expect_eq "no job left open" "$(sql 'select count(*) from jobs where state != 2')" "0"

# Checkpoints failing: the WAL is not copied into fleetgate.db, requests
# go on (their commits are in the WAL), the gateway says so once, and says
# when checkpoints work again.
for i in 1 2 3; do cp "$T/b.bundle" "$T/ck$i.bundle"; agent_conf "ck$i" >/dev/null; done
fault_set "op=sync err=EIO count=0 thread=fg-checkpoint"
ck_rc=""
for i in 1 2 3; do rc=0; agent "ck$i" || rc=$?; ck_rc="$ck_rc$rc"; done
expect_eq "checkpoint EIO: every enrollment succeeded" "$ck_rc" "000"
check "checkpoint EIO: the gateway says checkpoints fail" log_within 10 "cannot checkpoint the store's WAL"
check "checkpoint EIO: checkpoint syncs were failed" test "$(fault_failed)" -ge 1
expect_eq "checkpoint EIO: said once, not once a second" \
  "$(grep -c "cannot checkpoint the store's WAL" "$T/gw.log")" "1"
fault_clear
check "checkpoint EIO: checkpoints work again once the disk does" \
  log_within 10 "the store's WAL is checkpointed into .* again"
store_consistent "after checkpoint EIO"

# A disk that stays full: every enrollment and check-in fails retryable,
# the gateway stays up, and all succeed when there is room again.
fault_set "op=write err=ENOSPC count=0"
for i in 1 2 3; do cp "$T/b.bundle" "$T/full$i.bundle"; agent_conf "full$i" >/dev/null; done
full_rc=""
for i in 1 2 3; do rc=0; agent "full$i" || rc=$?; full_rc="$full_rc$rc"; done
expect_eq "disk full: every enrollment answered retry-later" "$full_rc" "333"
check "disk full: the answer says the disk is full" grep -q "database or disk is full" "$T/full1.out"
rc=0; agent a1 || rc=$?
check "disk full: an enrolled agent's check-in does not break it" test "$rc" = 0 -o "$rc" = 3
check "disk full: the gateway is up" gw_alive
check "disk full: calls kept failing" test "$(fault_failed)" -ge 3
fault_clear
for i in 1 2 3; do check "room again: full$i enrolls" agent "full$i"; done
store_consistent "after the full disk"
gw_stop
check "the gateway stopped cleanly after the faults" test $? = 0
finish
