#!/bin/bash
# pebble (ACME test CA) with a TLS certificate for the name "pebble", made once
# into its volume; pebble-challtestsrv is its DNS server, so its VA reaches
# each agent at the address that agent registered there.
source /usr/local/lib/fleetgate-lab/common.sh
P=/lab/pebble
mkdir -p "$P"
if [ ! -s "$P/cert.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$P/tls-ca.key" \
    -out "$P/tls-ca.pem" -days 30 -subj "/CN=fleetgate lab pebble TLS CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$P/key.pem" \
    -out "$P/srv.csr" -subj /CN=pebble 2>/dev/null
  printf 'subjectAltName=DNS:pebble,DNS:localhost,IP:127.0.0.1\n' >"$P/ext"
  openssl x509 -req -in "$P/srv.csr" -CA "$P/tls-ca.pem" -CAkey "$P/tls-ca.key" -CAcreateserial \
    -out "$P/cert.pem" -days 30 -extfile "$P/ext" 2>/dev/null
  log "made pebble's TLS certificate"
fi
cat >"$P/config.json" <<JSON
{"pebble": {"listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
  "certificate": "$P/cert.pem", "privateKey": "$P/key.pem", "httpPort": ${LAB_HTTP01_PORT:-5002},
  "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
wait_for 60 "challtestsrv" tcp_open challtestsrv 8053
dns=$(ipv4_of challtestsrv)
log "pebble: DNS server $dns:8053, http-01 port ${LAB_HTTP01_PORT:-5002}"
# real validation (no PEBBLE_VA_ALWAYS_VALID); no authorization reuse
export PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0
exec pebble -config "$P/config.json" -dnsserver "$dns:8053"
