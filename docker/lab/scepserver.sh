#!/bin/bash
# micromdm scepserver (Debian package scep) as the lab's SCEP CA: its depot
# and its challenge are made once in its volume; the init job reads the CA's
# fingerprint and the challenge from there for the gateway's scep backend.
source /usr/local/lib/fleetgate-lab/common.sh
D=/lab/scep
mkdir -p "$D"
if [ ! -s "$D/depot/ca.pem" ]; then
  scepserver ca -init -depot "$D/depot" -keySize 2048 -organization "fleetgate lab SCEP CA" >/dev/null
  openssl rand -hex 16 >"$D/challenge.tmp" && mv "$D/challenge.tmp" "$D/challenge"
  log "made the SCEP CA"
fi
exec scepserver -depot "$D/depot" -port 8080 -challenge "$(cat "$D/challenge")" -allowrenew 0
