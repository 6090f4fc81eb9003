#!/bin/bash
# The lab's check: waits (up to LAB_CHECK_TIMEOUT seconds, 300) until every
# device of the init job's list is enrolled, then prints `fleetgate status`
# and one line per device; exits 0 only when every agent is an active device
# with a valid certificate from the backend the lab expects, installed on the
# device (the agent's certificate file has that serial), and the EST device
# has a certificate that verifies against the gateway's CA.
source /usr/local/lib/fleetgate-lab/common.sh
TIMEOUT=${LAB_CHECK_TIMEOUT:-300}
wait_for "$TIMEOUT" "the init job's device list" test -s "$BUNDLES/devices"
wait_for 60 "the gateway's admin socket" test -S "$STATE/admin.sock"

REPORT=
# one pass: 0 when every device is enrolled; the lines in $REPORT
check_once() {
  local devs certs missing=0 name host group backend id serial file_serial line
  devs=$(fleetgate device list --state "$STATE" --json 2>/dev/null) || return 1
  certs=$(fleetgate cert list --state "$STATE" --json 2>/dev/null) || return 1
  REPORT=$(printf '%-10s %-22s %-8s %-10s %-34s %-20s %s\n' NAME HOSTNAME GROUP BACKEND SERIAL "NOT AFTER" RESULT)
  while read -r name host group backend; do
    id=$(jq -r --arg h "$host" '[.[] | select(.hostname == $h and .state == "active")][0].id // empty' <<<"$devs")
    line=$(jq -r --arg d "$id" --arg b "$backend" \
      '[.[] | select(.device == $d and .backend == $b and .status == "valid")] | last // empty | "\(.serial) \(.not_after)"' <<<"$certs")
    serial=${line%% *}
    file_serial=
    if [ -s "/lab/certs/$name/default.crt" ]; then
      file_serial=$(openssl x509 -in "/lab/certs/$name/default.crt" -noout -serial 2>/dev/null | cut -d= -f2)
    fi
    if [ -z "$id" ]; then
      result="MISSING: no active device $host"
    elif [ -z "$line" ]; then
      result="MISSING: no valid certificate from $backend"
    elif [ "${file_serial^^}" != "${serial^^}" ]; then
      result="MISSING: the agent has not installed it (its file: ${file_serial:-none})"
    else
      result=ok
    fi
    [ "$result" = ok ] || missing=$((missing + 1))
    REPORT+=$'\n'$(printf '%-10s %-22s %-8s %-10s %-34s %-20s %s' "$name" "$host" "$group" "$backend" \
      "${serial:--}" "${line#* }" "$result")
  done <"$BUNDLES/devices"
  while read -r name cn group backend; do
    serial= result="MISSING: no certificate in /lab/est"
    if [ -s "/lab/est/$name.crt" ]; then
      if openssl verify -CAfile "$BUNDLES/ca.pem" "/lab/est/$name.crt" >/dev/null 2>&1; then
        serial=$(openssl x509 -in "/lab/est/$name.crt" -noout -serial | cut -d= -f2)
        line=$(jq -r --arg s "$serial" '[.[] | select((.serial | ascii_upcase) == ($s | ascii_upcase) and .status == "valid" and .slot == "est")][0] // empty | "\(.serial) \(.not_after)"' <<<"$certs")
        if [ -n "$line" ]; then result=ok; else result="MISSING: the gateway has no valid EST certificate $serial"; fi
      else
        result="MISSING: /lab/est/$name.crt does not verify against the gateway's CA"
      fi
    fi
    [ "$result" = ok ] || missing=$((missing + 1))
    REPORT+=$'\n'$(printf '%-10s %-22s %-8s %-10s %-34s %-20s %s' "$name" "$cn" "$group" "$backend(est)" \
      "${serial:--}" "${line#* }" "$result")
  done <"$BUNDLES/est-devices"
  [ "$missing" = 0 ]
}

rc=1
while [ "$SECONDS" -lt "$TIMEOUT" ]; do
  if check_once; then rc=0; break; fi
  sleep 1
done
echo "==> fleetgate status"
fleetgate status --state "$STATE" || true
echo
echo "==> devices"
echo "$REPORT"
echo
if [ "$rc" = 0 ]; then
  echo "lab check: ok: $(wc -l <"$BUNDLES/devices") agents and $(wc -l <"$BUNDLES/est-devices") EST device enrolled"
else
  echo "lab check: FAILED: not every device is enrolled after ${TIMEOUT} s"
fi
exit "$rc"
