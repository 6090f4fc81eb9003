#!/bin/bash
# The lab's init job: `fleetgate init` for the gateway (local CA, EST
# front-end, HTTP side), the ACME backend (pebble) and the SCEP backend
# (scepserver) added to its config, the lab policy, and one bootstrap bundle
# per agent (plus an EST token) in the bundles volume. Runs once: a second
# run finds the gateway initialised and exits 0.
#   LAB_DEVICES  "NAME:HOSTNAME:GROUP:BACKEND ..." one bundle each (BACKEND: what
#                the policy should choose; the check job compares)
#   LAB_EST      "NAME:CN" the EST device (a token of group est)
source /usr/local/lib/fleetgate-lab/common.sh
: "${LAB_DEVICES:?}" "${LAB_EST:?}"
ENDPOINT=${LAB_ENDPOINT:-tcp://gateway:7700}

if [ -e "$STATE/.lab-ready" ]; then
  log "the gateway in $STATE is initialised already"
  exit 0
fi

# ---- the peers: bundles carry their CA certificates, so they must answer ----
wait_for 120 "pebble's TLS certificate" test -s /lab/pebble/tls-ca.pem
wait_for 120 "pebble" curl -fs --cacert /lab/pebble/tls-ca.pem https://pebble:15000/roots/0
wait_for 120 "scepserver" curl -fs "http://scepserver:8080/scep?operation=GetCACaps"
SCEP_FP=$(openssl x509 -in /lab/scep/depot/ca.pem -noout -fingerprint -sha256 | cut -d= -f2)
SCEP_CHALLENGE=$(cat /lab/scep/challenge)

# ---- the gateway ----
rm -rf "${STATE:?}"/* "$STATE"/.[!.]* 2>/dev/null || true
fleetgate init --state "$STATE" --listen tcp://0.0.0.0:7700 --http 0.0.0.0:7780 --est gateway:8443
cp /lab/pebble/tls-ca.pem "$STATE/pebble-tls-ca.pem"
cat >>"$STATE/fleetgated.conf" <<CONF

-- ---- the lab (docker/lab/init.sh) ----
-- every address inside the containers; the EST certificate names "gateway"
est.listen = "0.0.0.0:8443"
backends["local"].crl_url = "http://gateway:7780/crl/local.crl"
backends["local"].ocsp_url = "http://gateway:7780/ocsp"
-- pebble validates http-01 at the agent itself (challtestsrv resolves each
-- agent's name to that agent's container)
backends["acme"] = {
  plugin = "acme",
  directory = "https://pebble:14000/dir",
  tls_ca_file = "pebble-tls-ca.pem",
  root_url = "https://pebble:15000/roots/0",
  challenge = "http-01-agent",
  timeout = 10, poll_interval = 2,
}
backends["scep"] = {
  plugin = "scep",
  url = "http://scepserver:8080/scep",
  ca_fingerprint = "$SCEP_FP",
  challenge = "$SCEP_CHALLENGE",
  timeout = 10,
}
CONF
cp /usr/local/lib/fleetgate-lab/policy.lua "$STATE/policy.lua"
cp /usr/local/lib/fleetgate-lab/policy.tests.json "$STATE/policy.tests.json"
fleetgate policy check --state "$STATE" "$STATE/policy.lua"
for b in acme scep; do
  fleetgate backend cacerts --state "$STATE" "$b" >/dev/null || die "backend $b gives no CA certificates"
done

# ---- bundles ----
mkdir -p "$BUNDLES"
rm -f "$BUNDLES"/*
: >"$BUNDLES/devices.tmp"
for d in $LAB_DEVICES; do
  IFS=: read -r name host group backend <<<"$d"
  fleetgate token create --state "$STATE" --group "$group" --uses 1 --ttl 7d \
    --endpoint "$ENDPOINT" --bundle "$BUNDLES/$name.bundle" >/dev/null
  echo "$name $host $group ${backend:-local}" >>"$BUNDLES/devices.tmp"
  log "bundle for $name ($host, group $group)"
done
IFS=: read -r est_name est_cn <<<"$LAB_EST"
fleetgate token create --state "$STATE" --group est --uses 1 --ttl 7d | tail -n 1 >"$BUNDLES/$est_name.token"
grep -q '^fgt_' "$BUNDLES/$est_name.token" || die "no EST token: $(cat "$BUNDLES/$est_name.token")"
echo "$est_name $est_cn est local" >"$BUNDLES/est-devices"
cp "$STATE/ca/ca.crt" "$BUNDLES/ca.pem"
mv "$BUNDLES/devices.tmp" "$BUNDLES/devices"
touch "$STATE/.lab-ready"
log "gateway initialised; $(wc -l <"$BUNDLES/devices") agent bundles and 1 EST token in $BUNDLES"
