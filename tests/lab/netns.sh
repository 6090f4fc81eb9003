#!/usr/bin/env bash
# The network-namespace lab: the Compose lab's topology (docker/) without
# containers, so that CI runs it. Every host is a network namespace of its
# own, wired by veth pairs to a bridge in a namespace of its own; nothing
# is added to the namespace the test runs in, and everything is removed at
# exit, pass or fail.
#
#   10.77.0.1   gw     fleetgated: ZeroMQ :7700, HTTP side :8080 (OCSP,
#                      CRL, metrics), EST front-end :8443
#   10.77.0.2   ca     pebble (ACME) + pebble-challtestsrv as its DNS
#   10.77.0.3   scep   Debian's scepserver, the upstream SCEP CA
#   10.77.0.11  a1     agent (daemon), hostname a1.lab: local CA
#   10.77.0.12  a2     agent (daemon), hostname a2.lab: ACME, answering
#                      http-01 itself on its own address
#   10.77.0.13  a3     agent (daemon), hostname a3.lab: SCEP upstream CA
#   10.77.0.20  est    strongSwan pki --est, a router enrolling over EST
#
# It checks: each agent enrolled with the issuer the policy chose; pebble
# resolved a2.lab to a2's own address and its VA fetched the answer from
# there (the agent logs the fetch and the address it came from, pebble logs
# the URL); the EST device enrolls and re-enrolls; the gateway killed with
# -9 mid-way while a renewal of every device is queued, restarted, and every
# agent renews through it; a revocation is seen by OCSP from another host.
# Agents' hostnames are their own UTS namespaces (unshare --uts), so the
# facts come from the kernel as on a real host.
source "$(dirname "$0")/../integration/lib.sh"

[ "$(id -u)" = 0 ] || { echo "SKIP: the namespace lab needs root (ip netns)"; exit 77; }
for p in ip unshare pebble pebble-challtestsrv scepserver pki openssl sqlite3 curl; do
  command -v "$p" >/dev/null || die "$p not found: tools/dev deps installs the lab's packages"
done

LAB="fgl$$"          # namespace prefix; interface names stay under 15 characters
NET=10.77.0
HOSTS=()             # namespaces made, for the cleanup
declare -A PIDS=()   # role -> pid of its main process

export no_proxy='*' NO_PROXY='*'
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

lab_down() {
  local ns pid
  for pid in "${PIDS[@]}" $GW_PID; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.3
  for ns in "${HOSTS[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  for pid in "${PIDS[@]}" $GW_PID; do wait "$pid" 2>/dev/null || true; done
  GW_PID=
  for ns in "${HOSTS[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
  HOSTS=()
}
on_exit() {
  local rc=$?
  set +e
  if [ $rc -ne 0 ] || [ "$FAILS" -ne 0 ]; then
    for f in pebble.log scep.log a1.log a2.log a3.log; do
      echo "---- $f ----"; tail -n 25 "$T/$f" 2>/dev/null
    done
  fi
  lab_down
  local left
  left=$(ip netns list | grep -c "^$LAB-" || true)
  [ "$left" = 0 ] || echo "FAIL - $left lab namespaces left behind"
  (exit $rc)
  cleanup
}
trap on_exit EXIT
trap 'exit 143' TERM INT HUP   # a timeout or ^C still runs on_exit

# on HOST CMD...: run CMD in HOST's network namespace (a function: for a
# process whose pid is kept, ip netns exec is called directly, so that $!
# is the process itself)
on() { local h=$1; shift; ip netns exec "$LAB-$h" "$@"; }

# ---- the network: a bridge in its own namespace, one veth per host ----
ip netns add "$LAB-sw" || die "cannot make a network namespace: ip netns add failed"
HOSTS+=("$LAB-sw")
ip -n "$LAB-sw" link add br0 type bridge || die "cannot make the lab bridge"
ip -n "$LAB-sw" link set br0 up
add_host() { # NAME LAST_OCTET
  local ns="$LAB-$1"
  ip netns add "$ns" || die "cannot make namespace $ns"
  HOSTS+=("$ns")
  ip -n "$LAB-sw" link add "p-$1" type veth peer name eth0 netns "$ns" || die "cannot wire $1 to the bridge"
  ip -n "$LAB-sw" link set "p-$1" master br0 up
  ip -n "$ns" addr add "$NET.$2/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}
add_host gw 1
add_host ca 2
add_host scep 3
add_host a1 11
add_host a2 12
add_host a3 13
add_host est 20

wait_tcp() { # HOST ADDR PORT LOG
  for _ in $(seq 300); do
    on "$1" bash -c "(exec 3<>/dev/tcp/$2/$3)" 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on $2:$3 after 30 s: $(tail -n 5 "$4" 2>/dev/null)"
}

# ---- ca: pebble, validating for real through challtestsrv's DNS ----
P="$T/pebble"
mkdir -p "$P"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$P/tls-ca.key" \
  -out "$P/tls-ca.pem" -days 2 -subj /CN=fleetgate-lab-pebble-tls-ca 2>/dev/null || die "cannot make the TLS CA"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$P/key.pem" -out "$P/srv.csr" \
  -subj /CN=ca.lab 2>/dev/null || die "cannot make pebble's TLS key"
printf 'subjectAltName=DNS:ca.lab,IP:%s.2\n' "$NET" >"$P/ext"
openssl x509 -req -in "$P/srv.csr" -CA "$P/tls-ca.pem" -CAkey "$P/tls-ca.key" -CAcreateserial \
  -out "$P/cert.pem" -days 2 -extfile "$P/ext" 2>/dev/null || die "cannot sign pebble's TLS certificate"
cat >"$P/config.json" <<EOF
{"pebble": {"listenAddress": "$NET.2:14000", "managementListenAddress": "$NET.2:15000",
  "certificate": "$P/cert.pem", "privateKey": "$P/key.pem", "httpPort": 5002, "tlsPort": 5001,
  "ocspResponderURL": "", "externalAccountBindingRequired": false}}
EOF
ip netns exec "$LAB-ca" pebble-challtestsrv -dns01 "$NET.2:8053" -http01 "" -https01 "" -tlsalpn01 "" \
  -management "$NET.2:8055" -defaultIPv4 "" -defaultIPv6 "" >>"$T/cts.log" 2>&1 &
PIDS[cts]=$!
wait_tcp ca "$NET.2" 8055 "$T/cts.log"
# a2.lab is a2's own address: pebble's VA must go to the device
on ca curl -fsS -d "{\"host\":\"a2.lab.\",\"addresses\":[\"$NET.12\"]}" "http://$NET.2:8055/add-a" >/dev/null ||
  die "challtestsrv refused /add-a"
ip netns exec "$LAB-ca" env PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
  pebble -config "$P/config.json" -dnsserver "$NET.2:8053" >>"$T/pebble.log" 2>&1 &
PIDS[pebble]=$!
for _ in $(seq 300); do
  on ca curl -fs --cacert "$P/tls-ca.pem" "https://$NET.2:15000/roots/0" >"$P/root.pem" 2>/dev/null && break
  sleep 0.1
done
test -s "$P/root.pem" || die "pebble does not answer: $(tail -n 5 "$T/pebble.log")"

# ---- scep: Debian's scepserver ----
scepserver ca -init -depot "$T/depot" -keySize 2048 -organization "fleetgate lab scep" >/dev/null 2>&1 ||
  die "scepserver ca -init failed"
ip netns exec "$LAB-scep" scepserver -depot "$T/depot" -port 2016 -challenge lab-s3cret -allowrenew 0 >>"$T/scep.log" 2>&1 &
PIDS[scep]=$!
wait_tcp scep "$NET.3" 2016 "$T/scep.log"
SCEP_FP=$(openssl x509 -in "$T/depot/ca.pem" -noout -fingerprint -sha256 | cut -d= -f2)

# ---- gw: the gateway, routing by group ----
"$FLEETGATE" init --state "$GW" --listen "tcp://$NET.1:7700" --http "$NET.1:8080" --est "$NET.1:8443" \
  >"$T/init.out" || die "fleetgate init failed: $(cat "$T/init.out")"
sed -i 's/^checkin_interval = .*/checkin_interval = "2s"/' "$GW/fleetgated.conf"
python3 - "$GW/fleetgated.conf" "$NET" "$P/tls-ca.pem" "$SCEP_FP" <<'EOF'
import sys
p, net, ca, fp = sys.argv[1:]
s = open(p).read()
s = s.replace('backends = {\n', f'''backends = {{
  ["acme"] = {{ plugin = "acme", directory = "https://{net}.2:14000/dir", tls_ca_file = "{ca}",
               root_url = "https://{net}.2:15000/roots/0", challenge = "http-01-agent",
               timeout = 10, poll_interval = 1 }},
  ["scep"] = {{ plugin = "scep", url = "http://{net}.3:2016/scep", ca_fingerprint = "{fp}",
               challenge = "lab-s3cret", timeout = 10 }},
''', 1)
open(p, 'w').write(s)
EOF
cat >"$GW/policy.lua" <<'EOF'
-- The lab's routing: the group chooses the CA.
function enroll(req)
  if req.protocol == "est" then
    local cn = string.lower(req.csr.cn or "")
    return allow{ cn = cn, dns = { cn }, validity = fleet.days(30) }
  end
  if req.new_device and req.token == nil then
    return deny("no enrollment token")
  end
  local name = string.lower(req.facts.hostname or "")
  local d = { cn = name, dns = { name }, validity = fleet.days(30) }
  local g = req.device.group
  if g == "acme" then
    d.backend = "acme"
    d.profile = "server"
  elseif g == "scep" then
    d.backend = "scep"
  end
  return allow(d)
end

function checkin(dev)
  return {}
end
EOF
export GW_NETNS="$LAB-gw"   # lib.sh's gw_start runs fleetgated there
gw_start
CA="$GW/ca/ca.crt"
check "the lab network carries traffic between hosts (est -> gw's HTTP side)" \
  on est curl -fsS -o /dev/null "http://$NET.1:8080/metrics"
check "the lab is not the test's own network: the gateway does not answer from here" \
  bash -c "! curl -fsS -m 2 -o /dev/null http://$NET.1:8080/metrics 2>/dev/null"
# the operator's CLI runs on the gateway host: bundles carry the trust
# anchors of every backend, fetched from the CAs on the lab network
gwcli() { on gw "$FLEETGATE" "$@"; }

# ---- a1..a3: agents as daemons, each with its own hostname ----
agent_host() { # NAME GROUP KEY_TYPE [extra config line]
  local name=$1 dir="$T/agents/$1"
  mkdir -p "$dir"
  gwcli token create --state "$GW" --group "$2" --bundle "$T/$name.bundle" >/dev/null ||
    die "token create for $name failed"
  cat >"$dir/agent.conf" <<CONF
bundle = $T/$name.bundle
state_dir = $dir/state
request_timeout = 5s
checkin_interval = 2s
${4:-}
[slot default]
key_type = $3
key = $dir/default.key
cert = $dir/default.crt
chain = $dir/default-chain.crt
CONF
  ip netns exec "$LAB-$name" unshare --uts bash -c 'hostname "$1" && shift && exec "$@"' _ "$name.lab" \
    "$AGENT" --config "$dir/agent.conf" 2>>"$T/$name.log" &
  PIDS[$name]=$!
}
agent_host a1 local p256
agent_host a2 acme p256 "acme_http01_listen = $NET.12:5002"
# scepserver signs with the CSR's signature algorithm: an RSA key for its RSA CA
agent_host a3 scep rsa2048
crt() { echo "$T/agents/$1/default.crt"; }
chain() { echo "$T/agents/$1/default-chain.crt"; }
serial() { openssl x509 -in "$(crt "$1")" -noout -serial 2>/dev/null | cut -d= -f2; }
wait_cert() { # NAME [OLD_SERIAL]: until NAME holds a certificate (other than OLD_SERIAL)
  for _ in $(seq 600); do
    if [ -s "$(crt "$1")" ] && [ "$(serial "$1")" != "${2:-}" ]; then return 0; fi
    kill -0 "${PIDS[$1]}" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
for a in a1 a2 a3; do check "$a enrolled" wait_cert "$a"; done

issuer() { openssl x509 -in "$1" -noout -issuer -nameopt RFC2253 | sed 's/^issuer=//'; }
subject() { openssl x509 -in "$1" -noout -subject -nameopt RFC2253 | sed 's/^subject=//'; }
sans() { openssl x509 -in "$(crt "$1")" -noout -ext subjectAltName | sed -n '2,$p' | tr -d ' '; }
check "a1 (group local): issued by the local CA" openssl verify -CAfile "$CA" "$(crt a1)"
check "a2 (group acme): chains to pebble's root" \
  openssl verify -CAfile "$P/root.pem" -untrusted "$(chain a2)" "$(crt a2)"
check "a3 (group scep): issued by scepserver's CA" openssl verify -CAfile "$T/depot/ca.pem" "$(crt a3)"
expect_eq "a3's issuer is scepserver's CA" "$(issuer "$(crt a3)")" "$(subject "$T/depot/ca.pem")"
for a in a1 a2 a3; do
  expect_eq "$a: named after the hostname of its own UTS namespace" "$(sans $a)" "DNS:$a.lab"
done

# http-01 answered by a2 at its own address, fetched by pebble on the CA host
expect_match "pebble's VA fetched a2's answer from a2.lab" "$(cat "$T/pebble.log")" \
  "validate w/ HTTP: http://a2.lab:5002/.well-known/acme-challenge/"
expect_match "a2 served the answer itself, to the CA host's address" "$(cat "$T/a2.log")" \
  "http-01: answered /.well-known/acme-challenge/[A-Za-z0-9_-]+ to $NET\\.2"
check "a2's listener is closed after the order" \
  bash -c "! ip netns exec $LAB-a2 bash -c '(exec 3<>/dev/tcp/$NET.12/5002)' 2>/dev/null"

# ---- est: a router enrolling over EST with strongSwan pki ----
pki() { on est pki "$@" 2>>"$T/pki.log"; }
EURL="https://$NET.1:8443"
check "est: pki --estca fetches the gateway's CA over the lab network" \
  pki --estca --url "$EURL" --cacert "$CA" --caout "$T/estca.pem" --outform pem --force
pki --gen --type ecdsa --size 256 --outform pem >"$T/r1.key"
pki --req --in "$T/r1.key" --type priv --dn "CN=router1.lab" --san router1.lab --outform der >"$T/r1.csr"
TOK=$(gwcli token create --state "$GW" --group est 2>/dev/null | tail -n 1)
pki --est --url "$EURL" --in "$T/r1.csr" --cacert "$CA" --userpass "router1:$TOK" --outform pem >"$T/r1.crt" || true
check "est: the router enrolled with a token" openssl verify -CAfile "$CA" "$T/r1.crt"
expect_eq "est: the router's name" "$(subject "$T/r1.crt")" "CN=router1.lab"

# ---- the gateway killed mid-way, a renewal of every device queued ----
S1=$(serial a1) S2=$(serial a2) S3=$(serial a3)
gw_kill9
for g in local acme scep; do
  gwcli device command --state "$GW" --group "$g" renew >>"$T/cmd.out" 2>&1 ||
    fail "queueing the renewal of group $g: $(tail -n 1 "$T/cmd.out")"
done
sleep 3   # the agents' check-ins fail meanwhile
for a in a1 a2 a3; do check "$a kept running while the gateway was down" kill -0 "${PIDS[$a]}"; done
gw_start
check "a1 renewed through the restarted gateway" wait_cert a1 "$S1"
check "a2 renewed through the restarted gateway (ACME)" wait_cert a2 "$S2"
check "a3 renewed through the restarted gateway (SCEP)" wait_cert a3 "$S3"
check "a1's renewal: local CA" openssl verify -CAfile "$CA" "$(crt a1)"
check "a2's renewal: pebble" openssl verify -CAfile "$P/root.pem" -untrusted "$(chain a2)" "$(crt a2)"
check "a3's renewal: scepserver" openssl verify -CAfile "$T/depot/ca.pem" "$(crt a3)"
expect_eq "no certificate without a record, no serial twice" \
  "$(sqlite3 "$GW/fleetgate.db" 'select count(*) - count(distinct serial_hex) from certificates')" "0"
expect_eq "every job finished" "$(sqlite3 "$GW/fleetgate.db" 'select count(*) from jobs where state != 2')" "0"

# the router re-enrolls with its certificate (simplereenroll, new key)
pki --gen --type ecdsa --size 256 --outform pem >"$T/r1b.key"
pki --req --in "$T/r1b.key" --type priv --dn "CN=router1.lab" --san router1.lab --outform der >"$T/r1b.csr"
pki --est --url "$EURL" --in "$T/r1b.csr" --cacert "$CA" --cert "$T/r1.crt" --key "$T/r1.key" \
  --outform pem >"$T/r1b.crt" || true
check "est: the router re-enrolled with its certificate" openssl verify -CAfile "$CA" "$T/r1b.crt"

# ---- a revocation seen by OCSP from another host ----
ocsp() { # CERT: the OCSP status line, asked from the est host
  on est openssl ocsp -issuer "$CA" -cert "$1" -url "http://$NET.1:8080/ocsp" -CAfile "$CA" 2>&1 | grep "^/" | head -n 1
}
expect_match "OCSP from the est host: a1's certificate is good" "$(ocsp "$(crt a1)")" ": good$"
D1=$(sqlite3 "$GW/fleetgate.db" "select id from devices where grp = 'local'")
check "device revoke a1" gwcli device revoke --state "$GW" "$D1"
expect_match "OCSP from the est host: a1's certificate is revoked" "$(ocsp "$(crt a1)")" ": revoked$"
expect_match "OCSP from the est host: the router's certificate is still good" "$(ocsp "$T/r1b.crt")" ": good$"

lab_down
expect_eq "no lab namespace is left" "$(ip netns list | grep -c "^$LAB-" || true)" "0"
finish
