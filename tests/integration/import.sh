#!/usr/bin/env bash
# Bulk provisioning: device import from CSV with per-device bundles; an
# agent enrolling with its bundle becomes that pre-registered device (same
# id, state active) and the policy sees its serial and attributes;
# re-import changes nothing; malformed files, duplicate serials and wrong
# column counts fail with FILE:LINE and leave the store unchanged; a revoked
# token and a token bound to another serial are refused; token list, show
# and revoke (text and --json).
. "$(dirname "$0")/lib.sh"

gw_init
# A policy that names imported devices after their serial and site, and
# refuses them when the serial does not reach it.
cat > "$GW/policy.lua" <<'LUA'
function enroll(req)
  if req.device.group == "imported" then
    if req.device.serial == nil then
      return deny("no serial: not a pre-registered device")
    end
    local site = req.device.attrs.site or "nosite"
    local cn = string.lower(req.device.serial) .. "." .. string.lower(site) .. ".fleet.test"
    return allow{ cn = cn, dns = { cn } }
  end
  local cn = "dev-" .. string.sub(req.device.id, 5) .. ".fleet.test"
  if req.token and req.token.bound.serial then
    cn = "bound-" .. string.lower(req.token.bound.serial) .. ".fleet.test"
  end
  return allow{ cn = cn, dns = { cn } }
end
LUA
gw_start

counts() { sql "select (select count(*) from devices) || '/' || (select count(*) from tokens) || '/' || (select count(*) from audit)"; }
# facts NAME SERIAL HOSTNAME: a fake kernel view for agent NAME
facts() {
  mkdir -p "$T/facts/$1/sys/class/dmi/id" "$T/facts/$1/proc/sys/kernel"
  echo "$2" > "$T/facts/$1/sys/class/dmi/id/product_serial"
  echo "$3" > "$T/facts/$1/proc/sys/kernel/hostname"
}
# agent_with NAME BUNDLE: an agent using BUNDLE, facts from $T/facts/NAME
agent_with() {
  local conf
  conf=$(agent_conf "$1")
  sed -i "s|^bundle = .*|bundle = $2|" "$conf"
  local rc=0
  FLEETGATE_FACTS_ROOT="$T/facts/$1" "$AGENT" --config "$conf" --once >"$T/$1.out" 2>&1 || rc=$?
  return $rc
}

# ---- import with bundles ----
cat > "$T/fleet.csv" <<'CSV'
serial,hostname,group,site,owner
SN-0001,laptop1.corp.example,imported,Paris,"Doe, Jane"
SN-0002,laptop2.corp.example,imported,Berlin,"Bob ""B"" Smith"
SN-0003,,,Rome,carol
CSV
out=$("$FLEETGATE" device import --state "$GW" "$T/fleet.csv" --group imported --bundles "$T/bundles" 2>&1)
expect_match "import summary" "$out" "^imported 3 devices, 0 unchanged, wrote 3 bundles in [0-9.]+ s"
check "one bundle per serial" test -s "$T/bundles/SN-0001.bundle" -a -s "$T/bundles/SN-0002.bundle" -a -s "$T/bundles/SN-0003.bundle"
expect_eq "bundle mode 0600" "$(stat -c %a "$T/bundles/SN-0001.bundle")" "600"
expect_eq "three registered devices" "$(sql "select count(*) from devices where state = 3")" "3"
expect_eq "placeholder CURVE keys" "$(sql "select count(*) from devices where curve_key = 'pre:' || id")" "3"
expect_eq "--group fills an empty group" "$(sql "select grp from devices where serial = 'SN-0003'")" "imported"
expect_eq "free columns kept as attributes" "$(sql "select attrs_json from devices where serial = 'SN-0002'")" '{"owner":"Bob \"B\" Smith","site":"Berlin"}'
expect_eq "one bound one-use token per device" "$(sql "select count(*) from tokens t join devices d on d.id = t.device_id where t.uses_left = 1")" "3"
expect_eq "device.import audited" "$(sql "select count(*) from audit where kind = 'device.import'")" "1"

# ---- re-import changes nothing ----
before=$(counts)
out=$("$FLEETGATE" device import --state "$GW" "$T/fleet.csv" --group imported --bundles "$T/bundles2" 2>&1)
expect_match "re-import: all unchanged" "$out" "^imported 0 devices, 3 unchanged, wrote 0 bundles"
expect_eq "re-import: only the import's audit record added" "$(sql "select count(*) from devices")/$(sql "select count(*) from tokens")" "3/3"

# ---- bad files change nothing ----
before=$(counts)
bad() {   # bad NAME EXPECTED-REGEX: import $T/NAME.csv must fail naming FILE:LINE
  local rc=0 out
  out=$("$FLEETGATE" device import --state "$GW" "$T/$1.csv" --group imported --bundles "$T/bad-$1" 2>&1) || rc=$?
  expect_eq "$1: import fails" "$rc" "1"
  expect_match "$1: error names FILE:LINE" "$out" "$2"
  expect_match "$1: says nothing was imported" "$out" "nothing imported"
  expect_eq "$1: store unchanged" "$(counts)" "$before"
  expect_eq "$1: no bundle left behind" "$(find "$T/bad-$1" -type f 2>/dev/null | wc -l)" "0"
}
printf 'serial,hostname\nNEW-1,a.example\nNEW-2,"b.example\nNEW-3,c.example\n' > "$T/quoting.csv"
bad quoting "quoting.csv:3: a quoted field starts here and is never closed"
printf 'serial,hostname\nNEW-1,a"b\n' > "$T/quote2.csv"
bad quote2 "quote2.csv:2: a double quote inside an unquoted field"
printf 'serial,hostname,group\nNEW-1,a.example,g\nNEW-2,b.example,g\nNEW-1,c.example,g\n' > "$T/dup.csv"
bad dup "dup.csv:4: serial NEW-1 appears again \(first on line 2\)"
printf 'serial,hostname,group\nNEW-1,a.example,g\nNEW-2,b.example\n' > "$T/columns.csv"
bad columns "columns.csv:3: 2 fields, but the header has 3 columns"
printf 'serial,hostname,group\nNEW-1,bad_host!,g\n' > "$T/host.csv"
bad host "host.csv:2: hostname 'bad_host!' is not a valid DNS name"
printf 'serial,hostname,group,site,owner\nSN-0001,laptop1.corp.example,imported,Lyon,"Doe, Jane"\n' > "$T/changed.csv"
bad changed "changed.csv:2: serial SN-0001 is already registered as device dev_[0-9a-f]+ with other attributes"

# ---- the agent with its per-device bundle becomes that device ----
D1=$(sql "select id from devices where serial = 'SN-0001'")
facts p1 SN-0001 laptop1
check "agent enrolls with its per-device bundle" agent_with p1 "$T/bundles/SN-0001.bundle"
cat "$T/p1.out"
expect_eq "no new device" "$(sql "select count(*) from devices")" "3"
expect_eq "same device, now active" "$(sql "select state from devices where id = '$D1'")" "0"
expect_eq "the placeholder key was replaced" "$(sql "select count(*) from devices where id = '$D1' and curve_key like 'pre:%'")" "0"
expect_match "the policy saw serial and site" "$(openssl x509 -in "$T/agents/p1/default.crt" -noout -subject)" "CN ?= ?sn-0001.paris.fleet.test"
expect_eq "certificate recorded for that device" "$(sql "select count(*) from certificates where device_id = '$D1'")" "1"
expect_eq "device token used" "$(sql "select uses_left from tokens where device_id = '$D1'")" "0"
expect_eq "device.enroll audited" "$(sql "select count(*) from audit where kind = 'device.enroll' and device_id = '$D1'")" "1"

# ---- a revoked token is refused ----
D2=$(sql "select id from devices where serial = 'SN-0002'")
TOK2=$(sql "select id from tokens where device_id = '$D2'")
out=$("$FLEETGATE" token revoke --state "$GW" "$TOK2")
expect_match "token revoke says so" "$out" "token $TOK2 revoked"
expect_match "revoking again is harmless" "$("$FLEETGATE" token revoke --state "$GW" "$TOK2")" "already revoked"
rc=0; "$FLEETGATE" token revoke --state "$GW" tok_0000000000000000 2>"$T/rv.err" || rc=$?
expect_eq "revoking an unknown token fails" "$rc" "1"
expect_match "and says how to find ids" "$(cat "$T/rv.err")" "token list"
expect_eq "token.revoke audited" "$(sql "select count(*) from audit where kind = 'token.revoke'")" "1"
facts p2 SN-0002 laptop2
rc=0; agent_with p2 "$T/bundles/SN-0002.bundle" || rc=$?
expect_eq "revoked token: agent exits 1" "$rc" "1"
expect_match "revoked token: message" "$(cat "$T/p2.out")" "token $TOK2 was revoked"
expect_eq "revoked token: device still registered" "$(sql "select state from devices where id = '$D2'")" "3"

# ---- tokens bound to attributes ----
"$FLEETGATE" token create --state "$GW" --group bound --uses 2 --bind serial=HW-42 --bind tpm=no --bundle "$T/bound.bundle" >/dev/null
BT=$(sql "select id from tokens where bound_json is not null")
facts w1 HW-99 wrong1
rc=0; agent_with w1 "$T/bound.bundle" || rc=$?
expect_eq "bound token, other serial: agent exits 1" "$rc" "1"
expect_match "bound token: the message names the mismatch" "$(cat "$T/w1.out")" "bound to serial .*'HW-42' but this device reports 'HW-99'"
expect_eq "bound token: nothing consumed" "$(sql "select uses_left from tokens where id = '$BT'")" "2"
expect_eq "bound token: mismatch audited" "$(sql "select count(*) from audit where kind = 'token.mismatch'")" "1"
facts r1 HW-42 right1
check "bound token, matching serial: enrolls" agent_with r1 "$T/bound.bundle"
expect_match "the policy saw the bound attributes" "$(openssl x509 -in "$T/agents/r1/default.crt" -noout -subject)" "CN ?= ?bound-hw-42.fleet.test"
rc=0; "$FLEETGATE" token create --state "$GW" --group g --bind colour=red 2>"$T/bind.err" >/dev/null || rc=$?
expect_eq "unknown binding refused" "$rc" "2"
expect_match "and the known ones are named" "$(cat "$T/bind.err")" "known are serial"
# a plain group token with several uses still works
bundle grp --uses 2 --ttl 1h
facts g1 ANY-1 plain1
check "group token still enrolls" agent_with g1 "$T/grp.bundle"

# ---- token list / show ----
list=$("$FLEETGATE" token list --state "$GW")
expect_match "token list text has a header" "$list" "^TOKEN +STATE +GROUP"
expect_match "token list shows the revoked token" "$list" "$TOK2 +revoked"
expect_match "token list shows bindings" "$list" "serial=HW-42,tpm=no"
json=$("$FLEETGATE" token list --state "$GW" --json)
expect_eq "token list --json: all tokens" "$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' <<<"$json")" "$(sql "select count(*) from tokens")"
expect_eq "token list --json: states" \
  "$(python3 -c 'import json,sys; t={x["id"]:x for x in json.load(sys.stdin)}; print(t[sys.argv[1]]["state"], t[sys.argv[2]]["bound"]["serial"], t[sys.argv[2]]["uses_left"])' "$TOK2" "$BT" <<<"$json")" \
  "revoked HW-42 1"
TOK3=$(sql "select t.id from tokens t join devices d on d.id = t.device_id where d.serial = 'SN-0003'")
show=$("$FLEETGATE" token show --state "$GW" "$TOK3" --json)
expect_eq "token show --json: device and serial" \
  "$(python3 -c 'import json,sys; t=json.load(sys.stdin); print(t["state"], t["device"]["serial"], t["device"]["state"], t["device_id"] == t["device"]["id"])' <<<"$show")" \
  "valid SN-0003 registered True"
expect_match "token show text" "$("$FLEETGATE" token show --state "$GW" "$TOK3")" "device +dev_[0-9a-f]+ \(registered, serial SN-0003\)"
rc=0; "$FLEETGATE" token show --state "$GW" tok_nope 2>/dev/null || rc=$?
expect_eq "token show of an unknown id fails" "$rc" "1"

check "audit chain intact" "$FLEETGATE" audit verify --state "$GW"
check "gateway still running" gw_alive
check "gateway stops cleanly on SIGTERM" gw_stop
finish
