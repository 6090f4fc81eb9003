#!/usr/bin/env bash
# The agent as a daemon: started while the gateway is away, it backs off and
# enrolls once the gateway comes up; it checks in periodically; it renews on
# its own inside the renewal window the gateway assigned (which replaces
# its own renew_at); SIGTERM stops it cleanly.
. "$(dirname "$0")/lib.sh"

gw_init
# Short-lived certificates so that a renewal falls inside the test.
cat > "$GW/policy.lua" <<'LUA'
function enroll(req)
  local h = string.lower(req.facts.hostname)
  return allow{ cn = h, dns = { h }, validity = 120 }
end
LUA
sed -i 's/^checkin_interval = .*/checkin_interval = 2/' "$GW/fleetgated.conf"
# windows between 1/3 and 1/2 of the life (the CA backdates notBefore)
echo 'renewal = { window = "1/3..1/2" }' >> "$GW/fleetgated.conf"
bundle d1
AGENT_TIMEOUT=2s agent_conf d1 >/dev/null
D1="$T/agents/d1"
sed -i 's/^request_timeout = .*/request_timeout = 2s\ncheckin_interval = 2s/' "$D1/agent.conf"
echo "renew_at = 0.9" >> "$D1/agent.conf"   # the gateway's window replaces it

"$AGENT" --config "$D1/agent.conf" --log-level debug 2>"$T/daemon.log" &
APID=$!
sleep 3
check "daemon keeps running while the gateway is away" kill -0 $APID
check "nothing installed while offline" test ! -e "$D1/default.crt"

gw_start
for _ in $(seq 200); do [ -s "$D1/default.crt" ] && break; sleep 0.1; done
check "daemon enrolled once the gateway came up" test -s "$D1/default.crt"
first=$(openssl x509 -in "$D1/default.crt" -noout -serial 2>/dev/null || echo none)

for _ in $(seq 100); do
  [ "$(sql 'select count(*) from audit where kind = "cert.renew"')" -ge 1 ] 2>/dev/null && break
  sleep 0.5
done
second=$(openssl x509 -in "$D1/default.crt" -noout -serial 2>/dev/null || echo none)
check "daemon renewed on its own inside the gateway's window" test "$first" != "$second"
check "the agent kept the window the gateway assigned" grep -q "renewal window .* to " "$T/daemon.log"
s1=${first#serial=}
nb=$(sql "select not_before from certificates where serial_hex = '$s1'")
life=$(sql "select not_after - not_before from certificates where serial_hex = '$s1'")
ws=$(sql "select renew_start - not_before from certificates where serial_hex = '$s1'")
we=$(sql "select renew_end - not_before from certificates where serial_hex = '$s1'")
check "the window lies in 1/3..1/2 of the life ($life s): $ws..$we s" \
  test -n "$life" -a "${ws:-0}" -ge $(( ${life:-0} / 3 )) -a "${we:-0}" -le $(( ${life:-0} / 2 + 1 )) -a "${we:-0}" -gt "${ws:-0}"
rn=$(sql "select min(ts) from audit where kind = 'cert.renew'")
check "the renewal came inside the window (at $((rn - ${nb:-0})) s)" \
  test $((rn - ${nb:-0})) -ge "${ws:-99}" -a $((rn - ${nb:-0})) -le $(( ${we:-0} + 3 ))
check "the renewed certificate chains to the CA" openssl verify -CAfile "$GW/ca/ca.crt" "$D1/default.crt"
sleep 3
seen=$(sql "select last_seen - created_at from devices")
check "daemon keeps checking in (last_seen advanced ${seen}s)" test "$seen" -gt 2

kill -TERM $APID
rc=0; wait $APID || rc=$?
expect_eq "daemon exits 0 on SIGTERM" "$rc" "0"
expect_match "daemon logged the signal" "$(cat "$T/daemon.log")" "stopping"
finish
