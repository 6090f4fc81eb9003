#!/usr/bin/env bash
# Crash loops (docs/reliability.md): TRIALS bursts of enrollments, each cut
# by kill -9 at a random moment, of the gateway (odd trials: then it is
# started again) or of its signer (even trials: the monitor starts
# another). After each trial every agent is run until it has its
# certificate, and the trial is checked for orphan signatures (a
# certificate an agent holds that the store lacks), duplicate serials,
# unfinished agents, the database's integrity_check and `audit verify`.
# The totals are printed at the end. FG_FAULT_TRIALS and FG_FAULT_BURST
# set the size (20 trials of 16 agents by default; tools/dev fault --full
# runs 20 of 60).
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/fault.inc.sh"

TRIALS=${FG_FAULT_TRIALS:-20}
M=${FG_FAULT_BURST:-16}
gw_init
gw_start
bundle b --uses $((TRIALS * M)) --ttl 2h

monitor_pid() { sed -n 's/.*signer process [0-9]* (monitor \([0-9]*\)).*/\1/p' "$T/gw.log" | tail -n 1; }

t_orphan=0 t_dup=0 t_unfinished=0 t_integrity=0 t_audit=0 t_kills=0 t_cut=0
for trial in $(seq "$TRIALS"); do
  for i in $(seq "$M"); do
    cp "$T/b.bundle" "$T/t${trial}_$i.bundle"
    AGENT_TIMEOUT=3s agent_conf "t${trial}_$i" >/dev/null
  done
  before=$(sql 'select count(*) from certificates')
  at=$((RANDOM % M))
  victim=gateway; [ $((trial % 2)) = 0 ] && victim=signer
  pids=()
  for i in $(seq "$M"); do agent "t${trial}_$i" & pids+=($!); done
  for _ in $(seq 300); do
    [ "$(sql 'select count(*) from certificates' 2>/dev/null || echo 0)" -ge $((before + at)) ] && break
    sleep 0.01
  done
  if [ "$victim" = gateway ]; then
    gw_kill9
  else
    sp=$(pgrep -x fg-signer -P "$(monitor_pid)" || true)
    [ -n "$sp" ] && kill -9 "$sp"
  fi
  t_kills=$((t_kills + 1))
  for p in "${pids[@]}"; do wait "$p" || true; done
  had=0
  for i in $(seq "$M"); do [ -s "$(crt "t${trial}_$i")" ] && had=$((had + 1)); done
  [ "$had" -lt "$M" ] && t_cut=$((t_cut + 1))
  [ "$victim" = gateway ] && gw_start
  for round in 1 2 3 4; do
    for i in $(seq "$M"); do [ -s "$(crt "t${trial}_$i")" ] || agent "t${trial}_$i" || true; done
  done
  unfinished=0 orphan=0
  for i in $(seq "$M"); do
    c=$(crt "t${trial}_$i")
    if [ ! -s "$c" ]; then unfinished=$((unfinished + 1)); cat "$T/t${trial}_$i.out"; continue; fi
    s=$(openssl x509 -in "$c" -noout -serial | cut -d= -f2)
    der=$(openssl x509 -in "$c" -outform DER | xxd -p | tr -d '\n' | tr a-f A-F)
    [ "$(sql "select hex(der) from certificates where serial_hex = '$s'")" = "$der" ] || orphan=$((orphan + 1))
  done
  dup=$(sql 'select count(*) - count(distinct serial_hex) from certificates')
  extra=$(( $(sql 'select count(*) from certificates') - before - M ))
  [ "$extra" -gt 0 ] && dup=$((dup + extra))
  integ=0; [ "$(sql 'pragma integrity_check')" = ok ] || integ=1
  aud=0; "$FLEETGATE" audit verify --state "$GW" >/dev/null 2>&1 || aud=1
  echo "# trial $trial: kill -9 of the $victim after $at of $M, $had had their certificate; unfinished $unfinished, orphan $orphan, duplicate $dup, integrity $integ, audit $aud"
  t_orphan=$((t_orphan + orphan)) t_dup=$((t_dup + dup)) t_unfinished=$((t_unfinished + unfinished))
  t_integrity=$((t_integrity + integ)) t_audit=$((t_audit + aud))
  gw_alive || die "the gateway is down after trial $trial: $(tail -n 5 "$T/gw.log")"
done
echo "# totals: $TRIALS trials of $M agents, $t_kills kills -9 ($((TRIALS - TRIALS / 2)) of the gateway, $((TRIALS / 2)) of the signer), $t_cut cut a burst short; orphan signatures $t_orphan, duplicate serials $t_dup, unfinished agents $t_unfinished, integrity failures $t_integrity, audit failures $t_audit"
check "some kills cut a burst short" test "$t_cut" -gt 0
expect_eq "no orphan signature" "$t_orphan" "0"
expect_eq "no duplicate serial or second certificate for a request" "$t_dup" "0"
expect_eq "no unfinished agent" "$t_unfinished" "0"
expect_eq "integrity_check ok after every trial" "$t_integrity" "0"
expect_eq "audit verify ok after every trial" "$t_audit" "0"
expect_eq "no job left open" "$(sql 'select count(*) from jobs where state != 2')" "0"
check "the monitor logged the signer kills" grep -q "was killed by signal 9" "$T/gw.log"
finish
