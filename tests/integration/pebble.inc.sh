# Helpers for tests against Debian's pebble (ACME, RFC 8555) on loopback.
# Source after lib.sh. Debian's package ships no test certificates, so a
# throwaway TLS CA and a certificate for localhost/127.0.0.1 are made here.
# pebble validates for real: pebble-challtestsrv is its DNS server and
# resolves every name to 127.0.0.1, and its VA fetches http-01 answers from
# port HTTP01 there, where the test's gateway serves them
# (gw_init --http "127.0.0.1:$HTTP01"; the acme backend's default mode).
#   pebble_init [EXTRA_JSON]  write $P/config.json (EXTRA_JSON: more members)
#                             and start challtestsrv
#   pebble_start / pebble_stop (challtestsrv keeps running; pebble_cleanup
#                             in the exit trap stops both)
#   $P/tls-ca.pem (trust anchor), $P/root.pem (pebble's root), ACME_PORT,
#   MGMT_PORT, HTTP01
PEBBLE=$(command -v pebble) || die "pebble not found: apt-get install pebble"
CTS=$(command -v pebble-challtestsrv) || die "pebble-challtestsrv not found: apt-get install pebble"

# loopback only: no proxy from the environment for curl or the plugin's libcurl
export no_proxy='*' NO_PROXY='*'
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

# free_port: lib.sh

P="$T/pebble"
PB_PID= CTS_PID=
PEBBLE_ENV=${PEBBLE_ENV:-}

pebble_init() {
  local extra=${1:-}
  mkdir -p "$P"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$P/tls-ca.key" \
    -out "$P/tls-ca.pem" -days 2 -subj /CN=fleetgate-test-pebble-tls-ca 2>/dev/null || die "cannot make the TLS CA"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$P/key.pem" -out "$P/srv.csr" \
    -subj /CN=localhost 2>/dev/null || die "cannot make the TLS key"
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$P/ext"
  openssl x509 -req -in "$P/srv.csr" -CA "$P/tls-ca.pem" -CAkey "$P/tls-ca.key" -CAcreateserial \
    -out "$P/cert.pem" -days 2 -extfile "$P/ext" 2>/dev/null || die "cannot sign the TLS certificate"
  ACME_PORT=$(free_port)
  MGMT_PORT=$(free_port)
  HTTP01=$(free_port)
  DNS_PORT=$(free_port)
  cat >"$P/config.json" <<EOF
{"pebble": {"listenAddress": "127.0.0.1:$ACME_PORT", "managementListenAddress": "127.0.0.1:$MGMT_PORT",
  "certificate": "$P/cert.pem", "privateKey": "$P/key.pem", "httpPort": $HTTP01, "tlsPort": $(free_port),
  "ocspResponderURL": ""${extra:+, $extra}}}
EOF
  # DNS for pebble's VA: every name is 127.0.0.1 (IPv4 only)
  "$CTS" -dns01 "127.0.0.1:$DNS_PORT" -http01 "" -https01 "" -tlsalpn01 "" -management "127.0.0.1:$(free_port)" \
    -defaultIPv4 127.0.0.1 -defaultIPv6 "" >>"$T/cts.log" 2>&1 &
  CTS_PID=$!
}

pebble_start() {
  env PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=${NONCEREJECT:-0} $PEBBLE_ENV \
    "$PEBBLE" -config "$P/config.json" -dnsserver "127.0.0.1:$DNS_PORT" >>"$T/pebble.log" 2>&1 &
  PB_PID=$!
  for _ in $(seq 300); do
    curl -fs --cacert "$P/tls-ca.pem" "https://127.0.0.1:$ACME_PORT/dir" >/dev/null 2>&1 &&
      curl -fs --cacert "$P/tls-ca.pem" "https://127.0.0.1:$MGMT_PORT/roots/0" >"$P/root.pem" 2>/dev/null && return 0
    sleep 0.1
  done
  die "pebble does not answer: $(tail -n 5 "$T/pebble.log")"
}

pebble_stop() {
  if [ -n "$PB_PID" ]; then kill "$PB_PID" 2>/dev/null || true; wait "$PB_PID" 2>/dev/null || true; fi
  PB_PID=
}

# for the exit trap: pebble and challtestsrv
pebble_cleanup() {
  pebble_stop
  if [ -n "$CTS_PID" ]; then kill "$CTS_PID" 2>/dev/null || true; wait "$CTS_PID" 2>/dev/null || true; fi
  CTS_PID=
}

# pebble_mgmt PATH: GET on pebble's management interface
pebble_mgmt() { curl -fsS --cacert "$P/tls-ca.pem" "https://127.0.0.1:$MGMT_PORT$1"; }

# pebble_renew (both pebble suites use it)
source "$(dirname "${BASH_SOURCE[0]}")/pebble_renew.inc.sh"
