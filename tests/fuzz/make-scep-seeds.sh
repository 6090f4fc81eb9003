#!/usr/bin/env bash
# Remake fuzz_scep's seeds from a real exchange: the SCEP backend's own
# PKCSReq (scep_seed, with fuzz_scep's transaction id, nonce and signer)
# posted to tests/tools/scep-responder, answered SUCCESS, PENDING and
# FAILURE, plus its GetCACert answers (the CA alone as DER, and with an RA
# as PKCS#7). The responder's CA goes into fuzz_scep_keys.h, so the
# CertReps verify in the target and mutations reach the envelope.
#
#   tests/fuzz/make-scep-seeds.sh BUILD-FUZZ-DIR RESPONDER
#   e.g. tests/fuzz/make-scep-seeds.sh build-fuzz build/tests/scep-responder
set -euo pipefail
bf=$1 responder=$2
top=$(cd "$(dirname "$0")/../.." && pwd)
seeds=$top/tests/fuzz/seeds/scep
work=$(mktemp -d /tmp/fg-scep-seeds.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

serve() { # serve [responder options]: start it on a fresh port in $work/ca
  [ -n "$pid" ] && { kill "$pid"; wait "$pid" 2>/dev/null || true; }
  rm -rf "$work/ca/pending" "$work/ca/issued"
  port=$((20000 + RANDOM % 20000))
  "$responder" --dir "$work/ca" --port "$port" "$@" >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 50); do grep -q ready "$work/out" 2>/dev/null && return 0; sleep 0.1; done
  cat "$work/err" >&2
  exit 1
}
url() { echo "http://127.0.0.1:$port/scep?operation=$1"; }
post() { # post OUT: the PKCSReq, the CertRep kept in OUT
  curl -sf --data-binary @"$work/req.der" -H 'Content-Type: application/x-pki-message' \
    "$(url PKIOperation)" -o "$1"
}

mkdir -p "$work/ca"
serve
"$bf/tests/fuzz/scep_seed" "$work/ca/ca.crt" >"$work/req.der"
post "$seeds/certrep-success.der"
curl -sf "$(url GetCACert)" -o "$seeds/getcacert.der"
serve --pending 3
post "$seeds/certrep-pending.der"
serve --challenge not-the-one-in-the-request
post "$seeds/certrep-failure.der"
serve --ra
curl -sf "$(url GetCACert)" -o "$seeds/cacert-p7.der"

# the CA into the target's keys
python3 - "$top/tests/fuzz/fuzz_scep_keys.h" "$work/ca/ca.crt" <<'PY'
import re, sys
hdr, crt = sys.argv[1], open(sys.argv[2]).read().strip().split('\n')
s = open(hdr).read()
body = ''.join('\t"%s\\n"\n' % l for l in crt)
s = re.sub(r'(static const char scep_ca_pem\[\] =\n)(\t".*\\n"\n)+', lambda m: m.group(1) + body, s)
open(hdr, 'w').write(s)
PY
ls -l "$seeds"
