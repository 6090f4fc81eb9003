#!/bin/bash
# One fleetgate-agent (daemon) with one slot. Its name is the container's
# hostname (a fact the policy routes on). With LAB_REGISTER_DNS=1 it first
# registers its own address with pebble-challtestsrv, so that pebble's VA
# fetches http-01 answers from this container (acme_http01_listen).
#   LAB_NAME      its bundle: $BUNDLES/$LAB_NAME.bundle
#   LAB_KEY_TYPE  p256 (default), rsa2048 (SCEP), ...
source /usr/local/lib/fleetgate-lab/common.sh
: "${LAB_NAME:?}"
host=$(hostname)
A=/var/lib/fleetgate-agent
C=/lab/certs/$LAB_NAME
wait_for 600 "bundle $BUNDLES/$LAB_NAME.bundle" test -s "$BUNDLES/$LAB_NAME.bundle"
mkdir -p "$A" "$C" /etc/fleetgate
[ -s "$A/bootstrap.bundle" ] || cp "$BUNDLES/$LAB_NAME.bundle" "$A/bootstrap.bundle"
if [ "${LAB_REGISTER_DNS:-0}" = 1 ]; then
  addr=$(ipv4_of "$host")
  [ -n "$addr" ] || die "no address for $host"
  wait_for 120 "challtestsrv /add-a" curl -fsS -d "{\"host\":\"$host.\",\"addresses\":[\"$addr\"]}" \
    http://challtestsrv:8055/add-a
  log "registered $host -> $addr with challtestsrv"
fi
http01=
[ "${LAB_REGISTER_DNS:-0}" = 1 ] && http01="acme_http01_listen = 0.0.0.0:${LAB_HTTP01_PORT:-5002}"
cat >/etc/fleetgate/lab-agent.conf <<CONF
bundle = $A/bootstrap.bundle
state_dir = $A/state
request_timeout = 30s
checkin_interval = ${LAB_CHECKIN:-5m}
$http01
sandbox = ${LAB_SANDBOX:-required}
[slot default]
key_type = ${LAB_KEY_TYPE:-p256}
key = $C/default.key
cert = $C/default.crt
chain = $C/default-chain.crt
CONF
wait_for 600 "the gateway at gateway:7700" tcp_open gateway 7700
log "$host enrolls with $A/bootstrap.bundle"
exec fleetgate-agent --config /etc/fleetgate/lab-agent.conf --log-level info
