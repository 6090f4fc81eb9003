#!/usr/bin/env bash
# kill -9 of the gateway during a burst of enrollments, then restart: no
# certificate exists without a record, no serial is duplicated, and every
# agent completes on retry (the same request id gets the same answer).
. "$(dirname "$0")/lib.sh"

N=80
gw_init
gw_start
bundle burst --uses $N --ttl 1h
for i in $(seq $N); do
  cp "$T/burst.bundle" "$T/c$i.bundle"
  AGENT_TIMEOUT=3s agent_conf "c$i" >/dev/null
done
pids=()
for i in $(seq $N); do agent "c$i" & pids+=($!); done
# Kill the gateway once a quarter of the burst is through: mid-burst.
for _ in $(seq 400); do
  [ "$(sql 'select count(*) from certificates' 2>/dev/null || echo 0)" -ge $((N / 4)) ] && break
  sleep 0.01
done
gw_kill9
for p in "${pids[@]}"; do wait "$p" || true; done
done_before=0
for i in $(seq $N); do [ -s "$T/agents/c$i/default.crt" ] && done_before=$((done_before + 1)); done
echo "# $done_before of $N agents had their certificate before the kill"
check "the kill landed mid-burst" test "$done_before" -lt "$N"

gw_start
for round in 1 2 3; do
  for i in $(seq $N); do
    [ -s "$T/agents/c$i/default.crt" ] || agent "c$i" || true
  done
done
missing=0
for i in $(seq $N); do [ -s "$T/agents/c$i/default.crt" ] || { missing=$((missing + 1)); cat "$T/c$i.out"; }; done
expect_eq "every agent completed after the restart" "$missing" "0"
expect_eq "exactly one certificate per agent in the store" "$(sql 'select count(*) from certificates')" "$N"
expect_eq "no duplicate serial" "$(sql 'select count(distinct serial_hex) from certificates')" "$N"
expect_eq "every job finished" "$(sql "select count(*) from jobs where state != 2")" "0"
expect_eq "token uses all consumed, none lost" "$(sql 'select uses_left from tokens')" "0"
unrecorded=0
for i in $(seq $N); do
  c="$T/agents/c$i/default.crt"
  [ -s "$c" ] || continue
  s=$(openssl x509 -in "$c" -noout -serial | cut -d= -f2)
  d=$(openssl x509 -in "$c" -outform DER | python3 -c 'import sys; print(sys.stdin.buffer.read().hex().upper())')
  rec=$(sql "select hex(der) from certificates where serial_hex = '$s'")
  [ "$rec" = "$d" ] || { unrecorded=$((unrecorded + 1)); echo "agent c$i holds serial $s that the store does not have"; }
done
expect_eq "every certificate an agent holds is recorded byte for byte" "$unrecorded" "0"
check "audit chain verifies after the crash" "$FLEETGATE" audit verify --state "$GW"
finish
