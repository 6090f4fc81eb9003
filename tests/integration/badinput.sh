#!/usr/bin/env bash
# Malformed protobuf, oversized and multi-part frames, garbage, bad CSRs and
# weak keys: answered with bad request or dropped; the gateway stays up,
# keeps serving, and writes nothing.
. "$(dirname "$0")/lib.sh"

gw_init
gw_start
token=$("$FLEETGATE" token create --state "$GW" --group probe --uses 20 --ttl 1h 2>/dev/null)
counts() { sql "select (select count(*) from devices),(select count(*) from jobs),(select count(*) from certificates),(select count(*) from audit),(select uses_left from tokens)"; }
before=$(counts)

p() { "$PROBE" "$ENDPOINT" "$SERVER_KEY" "$@" || true; }
expect_match "garbage bytes -> bad request" "$(p garbage 200)" "^bad_request "
expect_match "oversized frame -> dropped" "$(p oversize 70000)" "^no-reply"
expect_match "two-frame request -> dropped" "$(p multipart)" "^no-reply"
expect_match "envelope without body -> bad request" "$(p nobody)" "^bad_request "
expect_match "unknown protocol version -> bad request naming it" "$(p badversion)" "^bad_request .*version 99"
expect_match "check-in from an unknown key -> unauthorized" "$(p checkin)" "^unauthorized .*not enrolled"
expect_match "CSR with a bad signature -> bad request" "$(p csr-badsig "$token")" "^bad_request .*signature"
expect_match "RSA-1024 CSR -> bad request" "$(p csr-rsa1024 "$token")" "^bad_request .*(1024|2048)"
expect_match "secp256k1 CSR -> bad request" "$(p csr-k256 "$token")" "^bad_request .*curve"
expect_match "CSR that is not DER -> bad request" "$(p csr-garbage "$token")" "^bad_request "
expect_match "enrollment without token from unknown key -> unauthorized" "$(p enroll "")" "^unauthorized "
expect_match "malformed token -> unauthorized" "$(p enroll fgt_nothex)" "^unauthorized .*malformed"

after=$(counts)
expect_eq "nothing was written by any of it" "$after" "$before"
check "gateway still running" gw_alive
expect_match "a good enrollment is served afterwards" "$(p enroll "$token")" "^ok "
bundle b1
agent_conf b1 >/dev/null
check "an agent enrolls afterwards" agent b1
finish
