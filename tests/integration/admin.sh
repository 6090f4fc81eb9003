#!/usr/bin/env bash
# The admin socket of a running gateway (docs/security.md):
#  - `fleetgate status` reports the daemon, its sandbox and its signer;
#  - `fleetgate device revoke` while the daemon runs publishes the new CRL
#    signed by the daemon's signer, without the CLI ever opening the CA key;
#  - SO_PEERCRED: a user who is not root, not the daemon's user and not in
#    admin_group is refused with a message naming what to do;
#  - with the daemon stopped the CLI works offline again.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { echo "# needs root (creates a user for the SO_PEERCRED check)"; exit 77; }

HTTP_PORT=$(free_port)
gw_init --http "127.0.0.1:$HTTP_PORT"
gw_start
check "the admin socket exists" test -S "$GW/admin.sock"
ST=$("$FLEETGATE" status --state "$GW" || true)
expect_match "status reports the running daemon and its signer" "$ST" \
  "^daemon: running \(pid $GW_PID\); sandbox required; CA keys in signer process [0-9]+ \(monitor [0-9]+\)"
J=$("$FLEETGATE" status --state "$GW" --json || true)
expect_eq "status --json names the sandbox" \
  "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["daemon"]["signer"]["sandbox"])' "$J")" "required"

bundle a1 --uses 1 --ttl 1h
agent_conf a1 >/dev/null
check "an agent enrolls" agent a1
SERIAL=$(openssl x509 -in "$(crt a1)" -noout -serial | cut -d= -f2)
DEV=$(sql "select device_id from certificates where serial_hex = '$SERIAL'")
crlnum() { openssl crl -in "$GW/crl/local.crl" -inform DER -noout -crlnumber 2>/dev/null | sed -n 's/^crlNumber=\(0x\)\{0,1\}//p'; }
before=$(crlnum || true)
# (LeakSanitizer cannot run under ptrace: a sanitizer build leaves it out here)
rc=0
ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" strace -f -qq -e trace=open,openat -o "$T/revoke.strace" \
  "$FLEETGATE" device revoke --state "$GW" "$DEV" >"$T/revoke.out" 2>&1 || rc=$?
expect_eq "device revoke through the running daemon succeeds" "$rc" "0"
check "the CLI opened files (strace saw it)" grep -q "fleetgated.conf" "$T/revoke.strace"
check "the CLI never opened the CA key" sh -c "! grep -q 'ca/ca.key' '$T/revoke.strace'"
check "the daemon's signer signed the CRL" grep -q "the signer signed a CRL of backend local for the CLI" "$T/gw.log"
CRL=$(openssl crl -in "$GW/crl/local.crl" -inform DER -noout -text)
expect_match "the published CRL lists the revoked serial" "$CRL" "Serial Number: $SERIAL"
after=$(crlnum || true)
check "the CRL number went up (${before:-none} -> $after)" test "$((16#${after:-0}))" -gt "$((16#${before:-0}))"
check "the CRL verifies under the CA" openssl crl -in "$GW/crl/local.crl" -inform DER -noout -CAfile "$GW/ca/ca.crt"

# SO_PEERCRED: an unprivileged user who may reach the socket file.
U=fgtest-peer
id "$U" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$U"
chmod o+x "$T" "$GW"
OUT=$(setpriv --reuid="$U" --regid="$U" --clear-groups /usr/bin/python3 - "$GW/admin.sock" <<'PY' 2>&1 || true
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(struct.pack("=IHHII", 0x31534746, 1, 3, 0, 1))
data = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    data += b
print(data[16:].decode("utf-8", "replace"))
PY
)
expect_match "an unprivileged user is refused, told what to do" "$OUT" \
  "user $U \(uid [0-9]+\) may not use the admin socket of this gateway: it is for root"
check "the daemon logged the refusal" grep -q "admin refused: user $U" "$T/gw.log"
chmod o-x "$T" "$GW"

# Offline again: the CLI loads the key itself, and says nothing of a daemon.
gw_stop
check "the admin socket is gone with the daemon" test ! -e "$GW/admin.sock"
ST=$("$FLEETGATE" status --state "$GW" || true)
expect_match "status says no daemon runs" "$ST" "^daemon: not running"
finish
