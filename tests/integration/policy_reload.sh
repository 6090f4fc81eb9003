#!/usr/bin/env bash
# Hot reload of the policy: a changed file is validated and swapped in, a
# broken one (syntax error, failing fixtures) is refused with a log line
# naming the reason while the previous policy keeps serving, SIGHUP
# reloads, and agents enrolling during a burst of rewrites all succeed.
# Also `fleetgate policy check` and `fleetgate policy test` on the command
# line.
. "$(dirname "$0")/lib.sh"

gw_init
gw_start
POL="$GW/policy.lua"
FX="$GW/policy.tests.json"
host=$(hostname | tr 'A-Z' 'a-z')

# wait_log PATTERN N: until the gateway log has at least N lines matching.
wait_log() {
  for _ in $(seq 100); do
    [ "$(grep -Ec -- "$1" "$T/gw.log" || true)" -ge "$2" ] && return 0
    sleep 0.05
  done
  return 1
}
# cn_of NAME: the subject CN of agent NAME's certificate
cn_of() { openssl x509 -in "$T/agents/$1/default.crt" -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= *//p'; }
# allow_policy PREFIX: a policy that allows everyone, naming them PREFIX-host
allow_policy() {
  cat <<LUA
function enroll(req)
  local h = string.lower(req.facts.hostname or "")
  return allow{ cn = "$1-" .. h, dns = { "$1-" .. h }, validity = fleet.days(7) }
end
LUA
}
new_agent() { bundle "$1" --uses 1 --ttl 1h; agent_conf "$1" >/dev/null; }

# ---- 1. the default policy serves ----
new_agent a1
check "agent enrolls under the start-up policy" agent a1
expect_eq "start-up policy names the cert after the host" "$(cn_of a1)" "$host"

# ---- 2. a deny-all policy, written as a temp file renamed over (editor style) ----
cat > "$GW/.policy.lua.tmp" <<'LUA'
function enroll(req)
  return deny("enrollment is closed for maintenance; try again tomorrow")
end
LUA
mv "$GW/.policy.lua.tmp" "$POL"
check "renamed-over policy is reloaded (generation 1)" wait_log "policy reloaded \(generation 1\)" 1
new_agent a2
rc=0; agent a2 || rc=$?
expect_eq "after the reload a new agent is denied" "$rc" "1"
expect_match "with the new policy's reason" "$(cat "$T/a2.out")" "closed for maintenance"

# ---- 3. an allowing policy written in place ----
allow_policy v3 > "$POL"
check "in-place write is reloaded (generation 2)" wait_log "policy reloaded \(generation 2\)" 1
new_agent a3
check "agent enrolls under generation 2" agent a3
expect_eq "and gets generation 2's name" "$(cn_of a3)" "v3-$host"

# ---- 4. a syntax error is refused; generation 2 keeps serving ----
printf 'function enroll(req)\n  return allow{ cn = "x"\nend\n' > "$POL"
check "broken policy is refused" wait_log "policy reload refused" 1
expect_match "the refusal names file and line" "$(grep 'reload refused' "$T/gw.log")" "policy\.lua:[0-9]+:"
new_agent a4
check "agents are still served after a refused reload" agent a4
expect_eq "by the previous policy" "$(cn_of a4)" "v3-$host"

# ---- 5. a policy that fails its own fixtures is refused ----
cat > "$FX" <<'JSON'
[
  { "name": "group test gets a v3 name",
    "request": { "new_device": true, "token": { "group": "test" },
                 "device": { "group": "test" }, "facts": { "hostname": "probe" } },
    "expect": { "allow": true, "cn": "v3-probe" } }
]
JSON
allow_policy v5 > "$POL"
check "policy failing its fixtures is refused" wait_log "policy reload refused" 2
expect_match "the refusal says which fixture and how" "$(grep 'reload refused' "$T/gw.log" | tail -n 1)" \
  "fixtures failed.*group test gets a v3 name.*cn: got 'v5-probe', want 'v3-probe'"
new_agent a5
check "agents are still served after failing fixtures" agent a5
expect_eq "by the previous policy" "$(cn_of a5)" "v3-$host"

# ---- 6. SIGHUP: fixtures fixed, the same file now passes ----
sed -i 's/v3-probe/v5-probe/' "$FX"
kill -HUP "$GW_PID"
check "SIGHUP reloads (generation 3) with the fixtures passing" \
  wait_log "policy reloaded \(generation 3\).*SIGHUP; 1 fixtures passed" 1
expect_eq "every successful reload is an audit record" \
  "$(sql "select count(*) from audit where kind = 'policy.reload'")" "3"
expect_eq "every refused reload is an audit record" \
  "$(sql "select count(*) from audit where kind = 'policy.reload_refused'")" "2"
expect_match "the audit record names the generation and the policy's hash" \
  "$(sql "select detail from audit where kind = 'policy.reload' order by seq desc limit 1")" '"generation":3,"sha256":"[0-9a-f]{64}"'
new_agent a6
check "agent enrolls under generation 3" agent a6
expect_eq "and gets generation 3's name" "$(cn_of a6)" "v5-$host"
check "gateway still running" gw_alive

# ---- 7. a burst: 20 agents enrolling while the policy is rewritten ----
sed -i 's/"cn": "v5-probe"/"profile": "default"/' "$FX"
N=20
bundle burst --uses $N --ttl 1h
for i in $(seq $N); do
  cp "$T/burst.bundle" "$T/b$i.bundle"
  AGENT_TIMEOUT=30s agent_conf "b$i" >/dev/null
done
before=$(grep -c "policy reloaded" "$T/gw.log")
pids=()
for i in $(seq $N); do agent "b$i" & pids+=($!); done
for k in 1 2 3 4 5 6; do
  if [ $((k % 2)) -eq 0 ]; then
    allow_policy "burst$k" > "$POL"
  else
    allow_policy "burst$k" > "$GW/.p.tmp" && mv "$GW/.p.tmp" "$POL"
  fi
  sleep 0.25
done
sleep 1.2   # > the longest debounce: the last write has been picked up
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
expect_eq "no request failed during the reload burst" "$failed" "0"
check "the burst reloaded the policy" wait_log "policy reloaded" $((before + 3))
new_agent a7
check "after the burst an agent enrolls" agent a7
expect_eq "under the last policy written" "$(cn_of a7)" "burst6-$host"
expect_eq "no policy errors during the burst" "$(grep -c 'policy failed\|keeps its previous policy' "$T/gw.log" || true)" "0"
check "gateway still running" gw_alive

# ---- 8. the command line: policy check and policy test ----
allow_policy cli > "$T/good.lua"
out=$("$FLEETGATE" policy check "$T/good.lua" 2>&1); rc=$?
expect_eq "policy check: a good policy exits 0" "$rc" "0"
printf 'function enroll(req)\n  return allow{ cn = "x"\nend\n' > "$T/bad.lua"
rc=0; out=$("$FLEETGATE" policy check "$T/bad.lua" 2>&1) || rc=$?
expect_eq "policy check: a syntax error exits 1" "$rc" "1"
expect_match "policy check: the message names file and line" "$out" "bad\.lua:3:"
printf 'local x = 1\n' > "$T/noenroll.lua"
rc=0; out=$("$FLEETGATE" policy check --state "$GW" "$T/noenroll.lua" 2>&1) || rc=$?
expect_eq "policy check: no enroll exits 1" "$rc" "1"
expect_match "policy check: and says to add one" "$out" "no enroll\(req\) function"
cat > "$T/cases.json" <<'JSON'
{ "name": "named after the host",
  "request": { "facts": { "hostname": "Box" } },
  "expect": { "allow": true, "cn": "box", "dns": ["box"], "validity": 604800 } }
JSON
rc=0; out=$("$FLEETGATE" policy test "$T/good.lua" "$T/cases.json" 2>&1) || rc=$?
expect_eq "policy test: a mismatch exits 1" "$rc" "1"
expect_match "policy test: reports the case" "$out" "not ok - named after the host"
expect_match "policy test: shows the cn diff" "$out" "  cn: got 'cli-box', want 'box'"
expect_match "policy test: shows the dns diff" "$out" "  dns: got \['cli-box'\], want \['box'\]"
expect_match "policy test: summary line" "$out" "0 passed, 1 failed"
sed -i 's/"box"/"cli-box"/g' "$T/cases.json"
rc=0; out=$("$FLEETGATE" policy test "$T/good.lua" "$T/cases.json" 2>&1) || rc=$?
expect_eq "policy test: all passing exits 0" "$rc" "0"
expect_match "policy test: ok line" "$out" "^ok - named after the host"
finish
