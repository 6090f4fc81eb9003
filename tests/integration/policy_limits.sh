#!/usr/bin/env bash
# A policy that errors, loops forever or allocates without bound: the
# request is denied with a clear message, the worker survives, and other
# requests are served.
. "$(dirname "$0")/lib.sh"

gw_init
cat > "$GW/policy.lua" <<'LUA'
function enroll(req)
  if req.slot == "loop" then
    while true do end
  elseif req.slot == "mem" then
    local t = {}
    while true do t[#t + 1] = string.rep("x", 4096) end
  elseif req.slot == "err" then
    local x = nil
    return x.field
  elseif req.slot == "sandbox" then
    return os.execute("touch /tmp/fleetgate-policy-escaped")
  elseif req.slot == "badname" then
    return allow{ cn = "x", dns = { "not a name" } }
  elseif req.slot == "widen" then
    return allow{ cn = "x", ip = { "10.0.0.1" } }
  end
  return allow{ cn = "probe", dns = { "probe" }, validity = 1000 * 86400 }
end
LUA
gw_start
token=$("$FLEETGATE" token create --state "$GW" --group probe --uses 20 --ttl 1h 2>/dev/null)
p() { FG_PROBE_SLOT=$1 "$PROBE" "$ENDPOINT" "$SERVER_KEY" enroll "$token" || true; }

expect_match "endless loop -> denied, instruction limit" "$(p loop)" "^denied .*instruction limit"
expect_match "unbounded allocation -> denied, memory limit" "$(p mem)" "^denied .*memory limit"
expect_match "runtime error -> denied with file and line" "$(p err)" "^denied .*policy.lua:[0-9]+"
expect_match "os is not reachable from a policy" "$(p sandbox)" "^denied .*os"
check "and nothing escaped the sandbox" test ! -e /tmp/fleetgate-policy-escaped
expect_match "an invalid DNS name from the policy -> denied" "$(p badname)" "^denied .*invalid DNS name"
expect_match "names the profile forbids -> denied" "$(p widen)" "^denied .*does not allow"
check "gateway still running" gw_alive
for i in 1 2 3; do
  expect_match "good request $i served after the failures" "$(p good$i)" "^ok "
done
# validity asked 1000 days, default profile allows 90: clamped.
days=$(sql "select (not_after - not_before) / 86400 from certificates limit 1")
check "validity clamped to the profile maximum (got $days days)" test "$days" -le 91
expect_eq "no token use was consumed by denied requests" \
  "$(sql 'select uses_left from tokens')" "17"
finish
