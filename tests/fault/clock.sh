#!/usr/bin/env bash
# The gateway's wall clock jumps forward by a day and back
# (docs/reliability.md), while it runs (fg-fault.so shifts CLOCK_REALTIME):
#  - tokens expire by the gateway's clock: a day ahead, a one-hour token is
#    refused as expired and not consumed; back again, it enrolls;
#  - the CRL: a day ahead, past its nextUpdate, a new CRL is served; back
#    again, the CRL from the future is replaced by one made now, and the
#    CRL number keeps growing;
#  - renewal: a certificate issued while the gateway was ahead starts in
#    the device's future; the agent refuses it, keeps its installed one,
#    and gets a usable certificate once the gateway's clock is right.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/fault.inc.sh"

HTTP_PORT=$(free_port)
URL="http://127.0.0.1:$HTTP_PORT"
gw_init --http "127.0.0.1:$HTTP_PORT"
sed -i 's/^backends\["local"\].crl_validity = .*/backends["local"].crl_validity = "12h"/' "$GW/fleetgated.conf"
rm "$GW/crl/local.crl"   # made by init for 7 days: the gateway makes a 12-hour one at start
fault_init "/no-file-is-watched/"
FLEETGATED=$(fault_wrap fleetgated "$FLEETGATED")
gw_start
bundle a1
agent_conf a1 >/dev/null
check "enroll with the clock right" agent a1
bundle tok --ttl 1h
agent_conf tok >/dev/null

# crl_field FIELD: lastupdate, nextupdate (epoch seconds) or crlnumber of the served CRL
crl_get() { curl -sf "$URL/crl/local.crl" -o "$T/crl.der" && openssl crl -inform DER -in "$T/crl.der" -out "$T/crl.pem"; }
crl_time() { date -d "$(openssl crl -in "$T/crl.pem" -noout -"$1" | cut -d= -f2)" +%s; }
# crl_wait EXPR: fetch the CRL until EXPR (a test of its fields) holds, for up to 10 s
# (the gateway looks at its CRL schedule every second)
crl_wait() { for _ in $(seq 50); do crl_get && eval "$1" && return 0; sleep 0.2; done; return 1; }
crl_number() { printf "%d" "$(openssl crl -in "$T/crl.pem" -noout -crlnumber | cut -d= -f2)"; }

check "the CRL is served" crl_get
n0=$(crl_number)

# A day ahead.
fault_set "clock=86400"
now=$(date +%s)
rc=0; agent tok || rc=$?
check "a day ahead: the one-hour token is refused" test "$rc" -ne 0
check "a day ahead: the answer says it expired" grep -q "expired at" "$T/tok.out"
expect_eq "a day ahead: the refused token was not consumed" "$(sql 'select uses_left from tokens order by rowid desc limit 1')" "1"
check "a day ahead: a new CRL is served (its thisUpdate is a day ahead)" \
  crl_wait 'test "$(crl_time lastupdate)" -ge $((now + 86400 - 120))'
n1=$(crl_number)
check "a day ahead: its CRL number grew" test "$n1" -gt "$n0"
cp "$T/agents/a1/default.crt" "$T/a1-before.crt"
rc=0; agent a1 --renew-now || rc=$?
check "a day ahead: the agent refuses a certificate that starts in its future" test "$rc" -ne 0
check "a day ahead: it says the certificate is not yet valid, and why" grep -q "not yet valid: it starts at .*check the gateway.s clock" "$T/a1.out"
check "a day ahead: the installed certificate stayed" cmp -s "$T/a1-before.crt" "$T/agents/a1/default.crt"
check "a day ahead: the gateway's clock did not touch the installed certificate's validity" \
  sh -c "openssl verify -CAfile \"$GW/ca/ca.crt\" \"$T/agents/a1/default.crt\" >/dev/null"

# Back to the right time.
fault_clear
check "back: the token enrolls" agent tok
now=$(date +%s)
check "back: the CRL from the future was replaced (thisUpdate not ahead)" \
  crl_wait 'test "$(crl_time lastupdate)" -le $((now + 60))'
n2=$(crl_number)
check "back: its nextUpdate is ahead" test "$(crl_time nextupdate)" -gt "$now"
check "back: the CRL number kept growing" test "$n2" -gt "$n1"
out=$(openssl verify -crl_check -CAfile "$GW/ca/ca.crt" -CRLfile "$T/crl.pem" "$T/agents/tok/default.crt" 2>&1 || true)
expect_match "back: a relying party accepts the CRL" "$out" ": OK$"
for round in 1 2 3; do agent a1 --renew-now && break || true; done
check "back: the agent renews" test "$(openssl x509 -in "$T/agents/a1/default.crt" -noout -serial)" != "$(openssl x509 -in "$T/a1-before.crt" -noout -serial)"
check "back: the renewed certificate is valid now" openssl verify -CAfile "$GW/ca/ca.crt" "$T/agents/a1/default.crt"
store_consistent "after the clock jumps"
finish
