#!/usr/bin/env bash
# ACME renewal information (ARI, RFC 9773) end to end against Debian's
# pebble. pebble 2.4 has no renewalInfo, so tests/tools/ari-directory.py
# serves pebble's directory with a renewalInfo member added and answers
# GET /renewal-info/<certID> with a window given on its command line; every
# other ACME request goes to pebble itself. Backend "acme" uses the
# stand-in's /dir, backend "plain" pebble's own /dir (no renewalInfo).
#  - the certID asked for is the issued certificate's (recomputed with
#    openssl); the chosen time lies in the window and reaches the agent;
#  - without renewalInfo nothing is asked and the own schedule applies;
#  - the daemon renews at the suggested time (a window seconds ahead), and
#    a daemon on the own schedule does not;
#  - a window in the past means renew now;
#  - bad JSON and a window that ends before it starts are logged, and the
#    own schedule applies.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pebble.inc.sh"
STANDIN="$FG_SOURCE_ROOT/tests/tools/ari-directory.py"

ARI_PID= D1= D2=
ari_stop() {
  if [ -n "$ARI_PID" ]; then kill "$ARI_PID" 2>/dev/null || true; wait "$ARI_PID" 2>/dev/null || true; fi
  ARI_PID=
}
all_cleanup() {
  for p in $D1 $D2; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  ari_stop
  pebble_cleanup
  cleanup
}
pebble_init
trap 'rc=$?; set +e; all_cleanup; exit $rc' EXIT
pebble_start

ARI_PORT=$(free_port)
CIDS="$T/certids.log"
: >"$CIDS"
# ari_start [stand-in args]: (re)start the stand-in on ARI_PORT
ari_start() {
  ari_stop
  python3 "$STANDIN" --port "$ARI_PORT" --pebble "https://127.0.0.1:$ACME_PORT/dir" --cacert "$P/tls-ca.pem" \
    --cert "$P/cert.pem" --key "$P/key.pem" --log "$CIDS" "$@" >>"$T/ari.log" 2>&1 &
  ARI_PID=$!
  for _ in $(seq 100); do
    curl -fs --cacert "$P/tls-ca.pem" "https://127.0.0.1:$ARI_PORT/dir" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "the ARI stand-in does not answer: $(tail -n 5 "$T/ari.log")"
}
ari_start --start 3600 --end 7200 --explanation-url https://ca.test/ari

gw_init --http "127.0.0.1:$HTTP01"
python3 - "$GW/fleetgated.conf" "$ARI_PORT" "$ACME_PORT" "$MGMT_PORT" "$P/tls-ca.pem" <<'EOF'
import sys
p, aport, port, mport, ca = sys.argv[1:]
s = open(p).read()
s = s.replace('backends = {\n', f'''backends = {{
  ["acme"] = {{ plugin = "acme", directory = "https://127.0.0.1:{aport}/dir",
               tls_ca_file = "{ca}", root_url = "https://127.0.0.1:{mport}/roots/0", timeout = 5 }},
  ["plain"] = {{ plugin = "acme", directory = "https://127.0.0.1:{port}/dir",
               tls_ca_file = "{ca}", root_url = "https://127.0.0.1:{mport}/roots/0", timeout = 5 }},
''', 1)
# the no-ARI cases check the agents' own schedule: no gateway windows
s += '\nrenewal = { smoothing = false }\n'
open(p, 'w').write(s)
EOF
cat > "$GW/policy.lua" <<'EOF'
function enroll(req)
  local name = string.lower(req.facts.hostname or "")
  local b = "acme"
  if string.find(name, "%.noari%.test$") then b = "plain" end
  return allow({ backend = b, cn = name, dns = { name }, validity = fleet.days(30) })
end

function checkin(dev)
  return {}
end
EOF
gw_start

agent_for() { # NAME HOSTNAME
  local name=$1 host=$2
  GROUP=acme bundle "$name"
  KEY_TYPE=p256 AGENT_TIMEOUT=5s agent_conf "$name" >/dev/null
  mkdir -p "$T/facts/$name/proc/sys/kernel"
  echo "$host" > "$T/facts/$name/proc/sys/kernel/hostname"
}
run_agent() { # NAME [args]: --once, output appended to $T/NAME.out
  local name=$1; shift
  FLEETGATE_FACTS_ROOT="$T/facts/$name" "$AGENT" --config "$T/agents/$name/agent.conf" --once "$@" \
    >>"$T/$name.out" 2>&1
}
ra_file() { echo "$T/agents/$1/state/default.renew_after"; }
serial() { openssl x509 -in "$(crt "$1")" -noout -serial 2>/dev/null | sed 's/^serial=//' || echo none; }
secs() { date -u -d "$1" +%s 2>/dev/null || echo 0; }
# json FILTER: a python expression on the JSON document j read from stdin
json() { python3 -c "import json, sys; j = json.load(sys.stdin); print($1)"; }
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }
b64url() { xxd -r -p | base64 -w0 | tr '+/' '-_' | tr -d '='; }
# the certID of a certificate (RFC 9773 4.1), from openssl's view of it
cert_id() {
  local kid sn
  kid=$(openssl x509 -in "$1" -noout -ext authorityKeyIdentifier | sed -n '2,$p' | tr -d ' :\n' | sed 's/^keyid//')
  sn=$(openssl x509 -in "$1" -noout -serial | sed 's/^serial=//')
  [ $(( ${#sn} % 2 )) -eq 0 ] || sn="0$sn"
  case $sn in [89A-Fa-f]*) sn="00$sn" ;; esac   # DER: positive, so a leading 0x00
  echo "$(printf %s "$kid" | b64url).$(printf %s "$sn" | b64url)"
}
MARK=0
mark() { MARK=$(wc -l <"$T/gw.log"); }
new_log() { tail -n +$((MARK + 1)) "$T/gw.log"; }
# the due time the agent reports for NAME's slot (--once on a valid certificate)
due_of() {
  local out
  out=$(FLEETGATE_FACTS_ROOT="$T/facts/$1" "$AGENT" --config "$T/agents/$1/agent.conf" --once 2>&1) || true
  sed -nE 's/.*renewal due at ([0-9TZ:-]+).*/\1/p' <<<"$out"
}

# ---- 0. the stand-in itself: directory and certID checks ----
DIR=$(curl -fsS --cacert "$P/tls-ca.pem" "https://127.0.0.1:$ARI_PORT/dir")
PDIR=$(curl -fsS --cacert "$P/tls-ca.pem" "https://127.0.0.1:$ACME_PORT/dir")
expect_eq "stand-in: renewalInfo points at the stand-in" \
  "$(json 'j["renewalInfo"]' <<<"$DIR")" "https://127.0.0.1:$ARI_PORT/renewal-info"
expect_eq "stand-in: every other member is pebble's, unchanged" \
  "$(json 'json.dumps({k: v for k, v in j.items() if k != "renewalInfo"}, sort_keys=True)' <<<"$DIR")" \
  "$(json 'json.dumps(j, sort_keys=True)' <<<"$PDIR")"
expect_eq "pebble's own directory has no renewalInfo" "$(json 'j.get("renewalInfo", "none")' <<<"$PDIR")" "none"
code=$(curl -s -o "$T/bad.json" -w '%{http_code}' --cacert "$P/tls-ca.pem" "https://127.0.0.1:$ARI_PORT/renewal-info/not-a-cert-id")
expect_eq "stand-in: a malformed certID is 400" "$code" "400"
expect_eq "stand-in: with a malformed problem" "$(json 'j["type"]' <"$T/bad.json")" "urn:ietf:params:acme:error:malformed"
: >"$CIDS"

# ---- 1. the certID asked for, the window, and what reaches the agent ----
agent_for a1 ari-1.test
mark
T0=$(date +%s)
check "ARI: enrollment succeeds" run_agent a1
T1=$(date +%s)
expect_eq "ARI: one renewalInfo request" "$(wc -l <"$CIDS")" "1"
expect_eq "ARI: the certID is the issued certificate's (AKI keyid . serial)" "$(head -n 1 "$CIDS")" "$(cert_id "$(crt a1)")"
LINE=$(new_log | grep -E 'suggests renewal between' | head -n 1 || true)
read -r WS WE CH < <(sed -E 's/.*between ([0-9]+) and ([0-9]+); chosen ([0-9]+).*/\1 \2 \3/' <<<"$LINE")
check "ARI: the window read is the one served (start now+3600)" test "${WS:-0}" -ge $((T0 + 3600)) -a "${WS:-0}" -le $((T1 + 3600))
check "ARI: the window read is the one served (end now+7200)" test "${WE:-0}" -ge $((T0 + 7200)) -a "${WE:-0}" -le $((T1 + 7200))
check "ARI: the chosen time ($CH) lies in the window" test "${CH:-0}" -ge "${WS:-1}" -a "${CH:-0}" -lt "${WE:-0}"
expect_match "ARI: the CA's explanationURL is logged" "$LINE" "the CA explains at https://ca.test/ari$"
expect_match "ARI: the CertReply carries it (gateway log)" "$(new_log)" "enrolled device .*; the CA suggests renewal at $(iso "${CH:-0}")"
expect_eq "ARI: the agent kept it with the serial" "$(cat "$(ra_file a1)" 2>/dev/null)" "$(serial a1) ${CH:-0}"
expect_eq "ARI: the agent's due time is the suggested one" "$(due_of a1)" "$(iso "${CH:-0}")"

# ---- 2. without renewalInfo: nothing asked, the own schedule applies ----
agent_for n1 plain-1.noari.test
mark
check "no ARI: enrollment succeeds" run_agent n1
expect_eq "no ARI: no renewalInfo request" "$(wc -l <"$CIDS")" "1"
expect_match "no ARI: the gateway suggests nothing" "$(new_log)" "enrolled device .*\(backend plain\)$"
check "no ARI: no suggestion kept" test ! -e "$(ra_file n1)"
NB=$(secs "$(openssl x509 -in "$(crt n1)" -noout -startdate | cut -d= -f2)")
NA=$(secs "$(openssl x509 -in "$(crt n1)" -noout -enddate | cut -d= -f2)")
DUE=$(secs "$(due_of n1)")
# the own schedule: 2/3 of the life, minus up to 5 % jitter
check "no ARI: due at 2/3 of the life (the own schedule)" \
  test "$DUE" -le $((NB + (NA - NB) * 2 / 3 + 1)) -a "$DUE" -ge $((NB + (NA - NB) * 2 / 3 - (NA - NB) / 20 - 1))

# ---- 3. the daemon renews at the suggested time, and not without ARI ----
ari_start --start 8 --end 10
agent_for d1 ari-daemon.test
agent_for d2 plain-daemon.noari.test
for n in d1 d2; do sed -i 's/^request_timeout = .*/request_timeout = 5s\ncheckin_interval = 60s/' "$T/agents/$n/agent.conf"; done
# One enrollment after the other: once, with two orders finalized in the
# same millisecond, pebble 2.4 stopped answering every request (not seen
# again in 15 rounds of two concurrent enrollments).
FLEETGATE_FACTS_ROOT="$T/facts/d1" "$AGENT" --config "$T/agents/d1/agent.conf" --log-level debug 2>"$T/d1.log" &
D1=$!
for _ in $(seq 300); do [ -s "$(ra_file d1)" ] && break; sleep 0.1; done
check "daemon: enrolled with a suggestion kept" test -s "$(ra_file d1)"
FLEETGATE_FACTS_ROOT="$T/facts/d2" "$AGENT" --config "$T/agents/d2/agent.conf" --log-level debug 2>"$T/d2.log" &
D2=$!
for _ in $(seq 300); do [ -s "$(crt d2)" ] && break; sleep 0.1; done
check "daemon: the one without ARI enrolled" test -s "$(crt d2)"
S1=$(serial d1); S2=$(serial d2)
read -r RS RA < <(cat "$(ra_file d1)" 2>/dev/null || echo "x 0")
expect_eq "daemon: the suggestion names its serial" "$RS" "$S1"
RENEWED=0
for _ in $(seq 300); do
  if [ "$(serial d1)" != "$S1" ]; then RENEWED=$(date +%s); break; fi
  sleep 0.1
done
check "daemon: renewed by itself (at $RENEWED, suggested $RA)" test "$RENEWED" -gt 0
check "daemon: not before the suggested time" test "$RENEWED" -ge "$RA"
check "daemon: within 5 s of the suggested time" test "$RENEWED" -le $((RA + 5))
expect_match "daemon: it was a renewal" "$(cat "$T/d1.log")" "renewal request sent"
check "daemon: without ARI it did not renew" test "$(serial d2)" = "$S2"
check "daemon: without ARI no renewal was sent" bash -c "! grep -q 'renewal request sent' '$T/d2.log'"
for p in $D1 $D2; do kill -TERM "$p"; done
rc1=0; wait "$D1" || rc1=$?; rc2=0; wait "$D2" || rc2=$?
D1= D2=
expect_eq "daemon: both exit 0 on SIGTERM" "$rc1 $rc2" "0 0"

# ---- 4. a window in the past: renew now ----
ari_start --start -7200 --end -3600
agent_for p1 ari-past.test
mark
check "past window: enrollment succeeds" run_agent p1
P1=$(serial p1)
expect_match "past window: the plugin says renew now" "$(new_log)" "window is past: renew now"
expect_match "past window: the CertReply carries a suggestion" "$(new_log)" "enrolled device .*; the CA suggests renewal at "
check "past window: the agent kept it" test -s "$(ra_file p1)"
: >"$T/p1.out"
check "past window: the next run renews without being asked" run_agent p1
check "past window: a new certificate" test "$(serial p1)" != "$P1"
check "past window: it was a renewal" bash -c "! grep -q 'valid until' '$T/p1.out'"
expect_match "past window: the gateway renewed it" "$(new_log)" "renewed device .* slot default: serial $(serial p1)"

# ---- 5. malformed answers: logged, the own schedule applies ----
for mode in bad-json reversed; do
  ari_start --start 3600 --end 7200 --mode "$mode"
  n=m-$mode
  agent_for "$n" "ari-$mode.test"
  mark
  before=$(wc -l <"$CIDS")
  check "$mode: enrollment succeeds" run_agent "$n"
  expect_eq "$mode: renewalInfo was asked" "$(wc -l <"$CIDS")" "$((before + 1))"
  case $mode in
    bad-json) why="the answer is not JSON" ;;
    reversed) why="ends before it starts" ;;
  esac
  expect_match "$mode: logged, own schedule" "$(new_log)" "no usable renewal information at .*$why.*the agent's own schedule applies"
  check "$mode: no suggestion kept" test ! -e "$(ra_file "$n")"
  NB=$(secs "$(openssl x509 -in "$(crt "$n")" -noout -startdate | cut -d= -f2)")
  NA=$(secs "$(openssl x509 -in "$(crt "$n")" -noout -enddate | cut -d= -f2)")
  DUE=$(secs "$(due_of "$n")")
  check "$mode: due at 2/3 of the life" \
    test "$DUE" -le $((NB + (NA - NB) * 2 / 3 + 1)) -a "$DUE" -ge $((NB + (NA - NB) * 2 / 3 - (NA - NB) / 20 - 1))
done

check "audit chain verifies" "$FLEETGATE" audit verify --state "$GW"
finish
