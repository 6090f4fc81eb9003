#!/usr/bin/env bash
# Twenty agents racing for one one-use token: exactly one wins. Two hundred
# agents enrolling at once all get distinct, valid certificates.
. "$(dirname "$0")/lib.sh"

gw_init
gw_start

bundle race --uses 1
for i in $(seq 20); do
  cp "$T/race.bundle" "$T/race$i.bundle"
  AGENT_TIMEOUT=30s agent_conf "race$i" >/dev/null
done
pids=()
for i in $(seq 20); do agent "race$i" & pids+=($!); done
wins=0; losses=0
for p in "${pids[@]}"; do
  if wait "$p"; then wins=$((wins + 1)); else losses=$((losses + 1)); fi
done
expect_eq "exactly one of 20 racing agents won the one-use token" "$wins" "1"
expect_eq "the other 19 were refused" "$losses" "19"
refused=$(grep -l "used up" "$T"/race*.out | wc -l)
expect_eq "each loser was told the token is used up" "$refused" "19"
expect_eq "one device created by the race" "$(sql 'select count(*) from devices')" "1"

N=200
bundle many --uses $N --ttl 1h
for i in $(seq $N); do
  cp "$T/many.bundle" "$T/m$i.bundle"
  AGENT_TIMEOUT=60s agent_conf "m$i" >/dev/null
done
pids=()
for i in $(seq $N); do agent "m$i" & pids+=($!); done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
expect_eq "all $N simultaneous agents enrolled" "$failed" "0"
serials=$(for i in $(seq $N); do openssl x509 -in "$T/agents/m$i/default.crt" -noout -serial 2>/dev/null || true; done | sort -u | wc -l)
expect_eq "$N distinct serials" "$serials" "$N"
bad=0
for i in $(seq $N); do
  a="$T/agents/m$i"
  openssl verify -CAfile "$GW/ca/ca.crt" "$a/default.crt" >/dev/null 2>&1 || bad=$((bad + 1))
  [ "$(openssl x509 -in "$a/default.crt" -noout -pubkey 2>/dev/null | sha256sum)" = \
    "$(openssl pkey -in "$a/default.key" -pubout 2>/dev/null | sha256sum)" ] || bad=$((bad + 1))
done
expect_eq "every certificate verifies and matches its agent's key" "$bad" "0"
expect_eq "$((N + 1)) devices in the store" "$(sql 'select count(*) from devices')" "$((N + 1))"
check "gateway still running" gw_alive
finish
