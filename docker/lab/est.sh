#!/bin/bash
# An EST device: strongSwan's pki fetches the CA certificates (--estca) and
# enrolls (--est) at the gateway's EST front-end, with its token as the
# Basic password, then verifies the certificate against the gateway's CA.
# The result stays in /lab/est for the check job.
source /usr/local/lib/fleetgate-lab/common.sh
wait_for 600 "the EST token" test -s "$BUNDLES/est-devices"
read -r name cn _ <"$BUNDLES/est-devices"
O=/lab/est
mkdir -p "$O"
if [ -s "$O/$name.crt" ] && openssl verify -CAfile "$BUNDLES/ca.pem" "$O/$name.crt" >/dev/null 2>&1; then
  log "$cn has its certificate already"
  exit 0
fi
URL=https://gateway:8443
wait_for 600 "the EST front-end at gateway:8443" tcp_open gateway 8443
pki --estca --url "$URL" --cacert "$BUNDLES/ca.pem" --caout "$O/estca.pem" --outform pem --force 2>>"$O/pki.log" ||
  die "pki --estca failed: $(tail -n 3 "$O/pki.log")"
[ -s "$O/$name.key" ] || pki --gen --type ecdsa --size 256 --outform pem >"$O/$name.key" 2>>"$O/pki.log"
pki --req --in "$O/$name.key" --type priv --dn "CN=$cn" --san "$cn" --outform der >"$O/$name.csr" 2>>"$O/pki.log"
tok=$(cat "$BUNDLES/$name.token")
for i in 1 2 3 4 5; do
  if pki --est --url "$URL" --in "$O/$name.csr" --cacert "$O/estca.pem" --userpass "$name:$tok" \
       --outform pem >"$O/$name.crt.tmp" 2>>"$O/pki.log" && [ -s "$O/$name.crt.tmp" ]; then
    mv "$O/$name.crt.tmp" "$O/$name.crt"
    break
  fi
  log "pki --est failed (try $i): $(tail -n 1 "$O/pki.log")"
  sleep 3
done
[ -s "$O/$name.crt" ] || die "no certificate for $cn"
openssl verify -CAfile "$O/estca.pem" "$O/$name.crt" >&2
openssl x509 -in "$O/$name.crt" -noout -subject -issuer -serial -enddate >&2
log "$cn enrolled over EST"
