#!/usr/bin/env bash
# Device lifecycle and commands: device show, the command queue (renew,
# rekey, update-trust, rebootstrap, per device and per group, delivered at
# check-in and answered by the agent), device retire, audit tail (--follow)
# and audit verify finding an altered, a removed and a reordered record.
. "$(dirname "$0")/lib.sh"

gw_init
sed -i 's/^checkin_interval = .*/checkin_interval = 1/' "$GW/fleetgated.conf"
gw_start

# daemon NAME: an agent daemon checking in every second
daemon() {
  local name=$1 dir="$T/agents/$1"
  GROUP=${GROUP:-fleet} bundle "$name"
  AGENT_TIMEOUT=3s agent_conf "$name" >/dev/null
  sed -i 's/^request_timeout = .*/request_timeout = 3s\ncheckin_interval = 1s/' "$dir/agent.conf"
  "$AGENT" --config "$dir/agent.conf" --log-level debug 2>"$T/$name.log" &
  echo $! > "$T/$name.pid"
  for _ in $(seq 100); do [ -s "$dir/default.crt" ] && return 0; sleep 0.1; done
  die "daemon $name did not enroll: $(tail -3 "$T/$name.log")"
}
serial() { openssl x509 -in "$T/agents/$1/default.crt" -noout -serial | cut -d= -f2; }
# wait_cmd ID: until the command is answered (done or failed); prints the state
wait_cmd() {
  local st
  for _ in $(seq 150); do
    st=$(sql "select state from commands where id = '$1'")
    [ "$st" = 2 ] || [ "$st" = 3 ] && break
    sleep 0.1
  done
  sql "select case state when 2 then 'done' when 3 then 'failed' else 'open' end || ' ' || result from commands where id = '$1'"
}
queue() { "$FLEETGATE" device command --state "$GW" "$@" | sed -n 's/^command \(cmd_[0-9a-f]*\) queued.*/\1/p'; }

daemon d1
D1=$(sql "select id from devices order by created_at limit 1")
check "device id known" test -n "$D1"

# ---- device show ----
out=$("$FLEETGATE" device show --state "$GW" "$D1")
expect_match "show: state" "$out" "state +active"
expect_match "show: the certificate" "$out" "$(serial d1)"
expect_match "show: facts" "$out" "hostname"
expect_match "show: history has the issuance" "$out" "cert.issue"
"$FLEETGATE" device show --state "$GW" "$D1" --json > "$T/show.json"
expect_eq "show --json: parsed, one valid certificate" \
  "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["id"], d["state"], [c["status"] for c in d["certificates"]])' "$T/show.json")" \
  "$D1 active ['valid']"
rc=0; "$FLEETGATE" device show --state "$GW" dev_nosuchdevice 2>"$T/err" || rc=$?
expect_eq "show: unknown device exits 1" "$rc" "1"
expect_match "show: unknown device says so" "$(cat "$T/err")" "no such device"

# ---- commands ----
rc=0; "$FLEETGATE" device command --state "$GW" dev_nosuchdevice renew 2>"$T/err" || rc=$?
expect_eq "command to an unknown device exits 1" "$rc" "1"
expect_match "command to an unknown device says so" "$(cat "$T/err")" "no device dev_nosuchdevice"
rc=0; "$FLEETGATE" device command --state "$GW" "$D1" explode 2>"$T/err" || rc=$?
expect_eq "an unknown command kind is a usage error" "$rc" "2"
expect_eq "nothing queued by the bad commands" "$(sql 'select count(*) from commands')" "0"

before=$(serial d1)
c1=$(queue "$D1" renew)
check "renew queued" test -n "$c1"
expect_match "renew: the agent answers done" "$(wait_cmd "$c1")" "^done slot default: new certificate installed"
check "renew: a new certificate is installed" test "$before" != "$(serial d1)"
expect_eq "renew: the command was delivered first" "$(sql "select delivered_at > 0 from commands where id = '$c1'")" "1"

before=$(serial d1)
oldkey=$(openssl pkey -in "$T/agents/d1/default.key" -pubout | openssl sha256)
c2=$(queue "$D1" rekey --slot default)
expect_match "rekey: done" "$(wait_cmd "$c2")" "^done"
check "rekey: new key" test "$oldkey" != "$(openssl pkey -in "$T/agents/d1/default.key" -pubout | openssl sha256)"

# a bundle whose trust anchor is some other CA: the agent then refuses what
# the gateway issues, until update-trust brings the right anchors
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/other.key" \
  -subj "/CN=some other CA" -days 2 -out "$T/other.crt" 2>/dev/null
python3 - "$T/d1.bundle" "$T/other.crt" <<'PY'
import sys, re
b, other = open(sys.argv[1]).read(), open(sys.argv[2]).read()
open(sys.argv[1], "w").write(re.sub(r"-----BEGIN CERTIFICATE-----.*-----END CERTIFICATE-----\n", other, b, flags=re.S))
PY
kill -HUP "$(cat "$T/d1.pid")"
sleep 0.5
c3a=$(queue "$D1" renew)
expect_match "with a foreign trust anchor the renewal is not installed" "$(wait_cmd "$c3a")" "^failed slot default: issued but not installed"
c3=$(queue "$D1" update-trust)
expect_match "update-trust: done" "$(wait_cmd "$c3")" "^done 1 trust anchor"
expect_eq "update-trust: the bundle's anchor is the gateway's CA again" \
  "$(openssl x509 -in "$T/d1.bundle" -noout -fingerprint)" "$(openssl x509 -in "$GW/ca/ca.crt" -noout -fingerprint)"
c3b=$(queue "$D1" renew)
expect_match "after update-trust the renewal installs" "$(wait_cmd "$c3b")" "^done"

before=$(serial d1)
c4=$(queue "$D1" rebootstrap)
expect_match "rebootstrap: done" "$(wait_cmd "$c4")" "^done"
check "rebootstrap: a fresh certificate" test "$before" != "$(serial d1)"
expect_eq "rebootstrap: issued as an enrollment" \
  "$(sql "select kind from jobs where request_id = (select request_id from certificates where serial_hex = '$(serial d1)')")" "enroll"

c5=$(queue "$D1" renew --slot nope)
expect_match "a command for a slot the agent lacks fails with the reason" "$(wait_cmd "$c5")" "^failed this agent has no slot 'nope'"

# group command
GROUP=fleet daemon d2
out=$("$FLEETGATE" device command --state "$GW" --group fleet renew)
expect_match "group command queued for both devices" "$out" "queued for 2 of 2 device"
for _ in $(seq 150); do [ "$(sql "select count(*) from commands where kind = 'renew' and state = 2")" -ge 4 ] && break; sleep 0.1; done
expect_eq "group command: both devices answered done" "$(sql "select count(*) from commands where kind = 'renew' and state = 2")" "4"
out=$("$FLEETGATE" device show --state "$GW" "$D1")
expect_match "show lists the commands and their results" "$out" "$c4 +rebootstrap .*done"
expect_eq "every command's outcome is in the audit log" \
  "$(sql "select count(*) from audit where kind in ('command.done', 'command.failed')")" "$(sql 'select count(*) from commands where state >= 2')"

# ---- retire ----
kill "$(cat "$T/d1.pid")"; wait "$(cat "$T/d1.pid")" 2>/dev/null || true
valid=$(sql "select count(*) from certificates where device_id = '$D1' and revoked = 0")
out=$("$FLEETGATE" device retire --state "$GW" "$D1")
expect_match "retire revokes every valid certificate" "$out" "retired \\($valid certificates? revoked\\)"
expect_eq "retire: device state" "$(sql "select state from devices where id = '$D1'")" "2"
expect_eq "retire: no valid certificate left" "$(sql "select count(*) from certificates where device_id = '$D1' and revoked = 0")" "0"
rc=0; agent d1 --renew-now || rc=$?
expect_eq "retired device: renewal refused" "$rc" "1"
expect_match "retired device: told why" "$(cat "$T/d1.out")" "retired"
rc=0; "$FLEETGATE" device command --state "$GW" "$D1" renew 2>"$T/err" || rc=$?
expect_eq "retired device takes no commands" "$rc" "1"
out=$("$FLEETGATE" device show --state "$GW" "$D1")
expect_match "retired device: history kept" "$out" "device.retire"
expect_match "retired device: certificates still listed" "$out" "revoked"

kill "$(cat "$T/d2.pid")"; wait "$(cat "$T/d2.pid")" 2>/dev/null || true

# ---- audit tail ----
out=$("$FLEETGATE" audit tail --state "$GW" -n 5)
expect_eq "audit tail -n 5 prints 5 records" "$(wc -l <<<"$out")" "5"
expect_match "audit tail ends with the newest record" "$(tail -1 <<<"$out")" "^ *$(sql 'select max(seq) from audit') "
expect_eq "audit tail --json: one JSON object per line" \
  "$("$FLEETGATE" audit tail --state "$GW" -n 3 --json | python3 -c 'import json,sys; print(len([json.loads(l)["seq"] for l in sys.stdin]))')" "3"
expect_eq "audit tail --device: only that device" \
  "$("$FLEETGATE" audit tail --state "$GW" -n 0 --device "$D1" | awk '{print $4}' | sort -u)" "$D1"
"$FLEETGATE" audit tail --state "$GW" -n 1 --follow > "$T/follow.out" &
FPID=$!
sleep 0.5
D2=$(sql "select id from devices where id != '$D1' limit 1")
queue "$D2" renew >/dev/null
last=$(sql 'select max(seq) from audit')
expect_eq "the new record is a command.queue" "$(sql "select kind from audit where seq = $last")" "command.queue"
for _ in $(seq 50); do grep -q "^ *$last " "$T/follow.out" && break; sleep 0.1; done
kill -INT $FPID; wait $FPID 2>/dev/null || true
expect_match "audit tail --follow prints a record made after it started" "$(cat "$T/follow.out")" "^ *$last "

# ---- audit verify names what was tampered with ----
check "audit verifies before tampering" "$FLEETGATE" audit verify --state "$GW"
gw_stop
sql "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
cp "$GW/fleetgate.db" "$T/pristine.db"
sql "update audit set detail = '{\"forged\":1}' where seq = 3"
rc=0; "$FLEETGATE" audit verify --state "$GW" 2>"$T/err" || rc=$?
expect_eq "altered record: verify fails" "$rc" "1"
expect_match "altered record: named" "$(cat "$T/err")" "record 3 was altered"
cp "$T/pristine.db" "$GW/fleetgate.db"; rm -f "$GW/fleetgate.db-wal" "$GW/fleetgate.db-shm"
sql "delete from audit where seq = 4"
rc=0; "$FLEETGATE" audit verify --state "$GW" 2>"$T/err" || rc=$?
expect_match "removed record: named" "$(cat "$T/err")" "record 4 is missing"
cp "$T/pristine.db" "$GW/fleetgate.db"; rm -f "$GW/fleetgate.db-wal" "$GW/fleetgate.db-shm"
sql "update audit set seq = -5 where seq = 5; update audit set seq = 5 where seq = 6; update audit set seq = 6 where seq = -5"
rc=0; "$FLEETGATE" audit verify --state "$GW" 2>"$T/err" || rc=$?
expect_eq "reordered records: verify fails" "$rc" "1"
expect_match "reordered records: the break is named" "$(cat "$T/err")" "record 5"
finish
