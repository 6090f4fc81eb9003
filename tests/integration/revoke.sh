#!/usr/bin/env bash
# Revoking a device revokes its certificates; it can no longer renew,
# enroll or check in. The audit chain stays intact.
. "$(dirname "$0")/lib.sh"

gw_init
gw_start
bundle v1
agent_conf v1 >/dev/null
V1="$T/agents/v1"
check "enroll" agent v1
check "renew" agent v1 --renew-now
dev=$("$FLEETGATE" device list --state "$GW" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
out=$("$FLEETGATE" device revoke --state "$GW" "$dev")
expect_match "revoke reports both certificates" "$out" "2 certificates revoked"
expect_eq "device state is revoked" \
  "$("$FLEETGATE" device list --state "$GW" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["state"])')" "revoked"
expect_eq "every certificate is revoked" \
  "$("$FLEETGATE" cert list --state "$GW" --json | python3 -c 'import json,sys; print(sorted(set(c["status"] for c in json.load(sys.stdin))))')" "['revoked']"

rc=0; agent v1 --renew-now || rc=$?
expect_eq "revoked device cannot renew (exit 1)" "$rc" "1"
expect_match "renewal refusal says revoked" "$(cat "$T/v1.out")" "revoked"

# A fresh token does not help a revoked device's key.
bundle v1b
cp "$T/v1b.bundle" "$T/v1.bundle"
rm -f "$V1/default.crt" "$V1/default.key"
rc=0; agent v1 || rc=$?
expect_eq "revoked device cannot enroll again (exit 1)" "$rc" "1"
expect_match "enrollment refusal says revoked" "$(cat "$T/v1.out")" "revoked"

out=$(FG_PROBE_CURVE="$V1/state/curve.key" "$PROBE" "$ENDPOINT" "$SERVER_KEY" checkin)
expect_match "revoked device check-in refused" "$out" "^unauthorized .*revoked"

rc=0; "$FLEETGATE" device revoke --state "$GW" dev_doesnotexist >"$T/rv.out" 2>&1 || rc=$?
expect_eq "revoking an unknown device fails" "$rc" "1"
expect_match "and says so" "$(cat "$T/rv.out")" "no such device"

check "audit chain verifies" "$FLEETGATE" audit verify --state "$GW"
expect_match "audit has the revocation" "$(sql "select group_concat(kind) from audit")" "device.revoke"
finish
