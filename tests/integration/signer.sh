#!/usr/bin/env bash
# The signer process of a running gateway (docs/security.md):
#  - it is confined (seccomp filter mode, no_new_privs, not root);
#  - the CA's private scalar is in the signer's memory and in no other
#    fleetgated process (daemon, monitor, policy reader), while agents enroll (a black-box memory search);
#  - kill -9 of the signer during a burst of enrollments: the monitor
#    starts another, every agent completes, no certificate exists without
#    its record, no serial is duplicated;
#  - a signer that keeps dying stops the gateway with a non-zero status,
#    and one that cannot load its key stops the start with the reason.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { echo "# needs root (reads other processes' memory)"; exit 77; }

HTTP_PORT=$(free_port)
gw_init --http "127.0.0.1:$HTTP_PORT"
gw_start
SIGNER=$(sed -n 's/.*signer process \([0-9]*\) (monitor \([0-9]*\)).*/\1/p' "$T/gw.log" | tail -n 1)
MONITOR=$(sed -n 's/.*signer process \([0-9]*\) (monitor \([0-9]*\)).*/\2/p' "$T/gw.log" | tail -n 1)
check "the gateway logged its signer and monitor" test -n "$SIGNER" -a -n "$MONITOR"
expect_eq "the signer is named fg-signer" "$(cat /proc/$SIGNER/comm)" "fg-signer"
expect_eq "the monitor is the signer's parent" "$(awk '/^PPid:/ {print $2}' /proc/$SIGNER/status)" "$MONITOR"
expect_eq "the signer runs under a seccomp filter" "$(awk '/^Seccomp:/ {print $2}' /proc/$SIGNER/status)" "2"
expect_eq "the signer has no_new_privs" "$(awk '/^NoNewPrivs:/ {print $2}' /proc/$SIGNER/status)" "1"
expect_eq "the daemon has no_new_privs" "$(awk '/^NoNewPrivs:/ {print $2}' /proc/$GW_PID/status)" "1"
check "the signer dropped root" test "$(awk '/^Uid:/ {print $2}' /proc/$SIGNER/status)" != 0
check "the signer holds no socket but its own and no file but stderr" \
  test "$(ls /proc/$SIGNER/fd | sort -n | tr '\n' ' ')" = "0 1 2 3 "

# The CA's private scalar, big-endian as openssl prints it.
SCALAR=$(openssl pkey -in "$GW/ca/ca.key" -noout -text 2>/dev/null |
  awk '/^priv:/ {on=1; next} /^pub:/ {on=0} on' | tr -d ' :\n')
SCALAR=${SCALAR: -64}
check "the CA key's scalar was read (32 bytes)" test "${#SCALAR}" = 64

# search PID: 1 when the scalar (big-endian, or reversed as OpenSSL's
# little-endian BIGNUM limbs keep it) is in the process's readable memory.
search() {
  python3 - "$1" "$SCALAR" <<'PY'
import sys
pid, hexs = sys.argv[1], sys.argv[2]
be = bytes.fromhex(hexs)
pats = [be, be[::-1]]
found = 0
with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
    for line in maps:
        addr, perms = line.split()[:2]
        if perms[0] != "r" or "[vvar]" in line or "[vsyscall]" in line:
            continue
        lo, hi = (int(x, 16) for x in addr.split("-"))
        if hi - lo > (1 << 32):
            continue        # sanitizer shadow memory: reserved, never holds data
        step, tail = 1 << 24, b""
        for at in range(lo, hi, step):
            try:
                mem.seek(at)
                chunk = tail + mem.read(min(step, hi - at))
            except (OSError, ValueError):
                tail = b""
                continue
            if any(p in chunk for p in pats):
                found = 1
                break
            tail = chunk[-31:]
        if found:
            break
print(found)
PY
}

# Enroll while searching: a burst of agents in the background.
N=24
bundle burst --uses $((N + 30)) --ttl 1h
for i in $(seq $N); do
  cp "$T/burst.bundle" "$T/m$i.bundle"
  AGENT_TIMEOUT=5s agent_conf "m$i" >/dev/null
done
pids=()
for i in $(seq $N); do agent "m$i" & pids+=($!); done
expect_eq "the scalar is in the signer's memory (the search works)" "$(search "$SIGNER")" "1"
expect_eq "the scalar is not in the daemon's memory" "$(search "$GW_PID")" "0"
expect_eq "the scalar is not in the monitor's memory" "$(search "$MONITOR")" "0"
READER=$(pgrep -P "$GW_PID" -x fg-policyread || true)
check "the policy reader runs beside the daemon" test -n "$READER"
expect_eq "the scalar is not in the policy reader's memory" "$(search "${READER:-0}")" "0"
for p in "${pids[@]}"; do wait "$p" || true; done
expect_eq "the scalar is still not in the daemon's memory after the burst" "$(search "$GW_PID")" "0"
ok_n=0
for i in $(seq $N); do [ -s "$(crt m$i)" ] && ok_n=$((ok_n + 1)); done
expect_eq "every agent of the burst enrolled" "$ok_n" "$N"

# kill -9 of the signer during a burst.
N2=30
for i in $(seq $N2); do
  cp "$T/burst.bundle" "$T/k$i.bundle"
  AGENT_TIMEOUT=5s agent_conf "k$i" >/dev/null
done
pids=()
before=$(sql 'select count(*) from certificates')
for i in $(seq $N2); do agent "k$i" & pids+=($!); done
for _ in $(seq 500); do
  [ "$(sql 'select count(*) from certificates' 2>/dev/null || echo 0)" -ge $((before + N2 / 4)) ] && break
  sleep 0.01
done
kill -9 "$SIGNER"
for p in "${pids[@]}"; do wait "$p" || true; done
done_before=0
for i in $(seq $N2); do [ -s "$(crt k$i)" ] && done_before=$((done_before + 1)); done
echo "# $done_before of $N2 agents had their certificate when the burst ended"
check "the monitor logged the signer's death" grep -q "signer process $SIGNER was killed by signal 9" "$T/gw.log"
check "a new signer took over" grep -q "signer process [0-9]* took over" "$T/gw.log"
check "the gateway stayed up" gw_alive
for round in 1 2 3 4; do
  for i in $(seq $N2); do [ -s "$(crt k$i)" ] || agent "k$i" || true; done
done
missing=0
for i in $(seq $N2); do [ -s "$(crt k$i)" ] || { missing=$((missing + 1)); cat "$T/k$i.out"; }; done
expect_eq "every agent completed after the signer's restart" "$missing" "0"
total=$((N + N2))
expect_eq "one certificate per agent in the store" "$(sql 'select count(*) from certificates')" "$total"
expect_eq "no duplicate serial" "$(sql 'select count(distinct serial_hex) from certificates')" "$total"
unrecorded=0
for i in $(seq $N2); do
  c=$(crt k$i)
  [ -s "$c" ] || continue
  s=$(openssl x509 -in "$c" -noout -serial | cut -d= -f2)
  d=$(openssl x509 -in "$c" -outform DER | xxd -p | tr -d '\n' | tr a-f A-F)
  [ "$(sql "select hex(der) from certificates where serial_hex = '$s'")" = "$d" ] || unrecorded=$((unrecorded + 1))
done
expect_eq "no certificate an agent holds lacks its record" "$unrecorded" "0"
check "the certificates chain to the CA" openssl verify -CAfile "$GW/ca/ca.crt" "$(crt k1)" "$(crt m1)"
NEW=$(sed -n 's/.*signer process \([0-9]*\) took over.*/\1/p' "$T/gw.log" | tail -n 1)
check "the new signer is confined too" test "$(awk '/^Seccomp:/ {print $2}' /proc/$NEW/status)" = 2
M=$(curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics")
expect_match "the signer restart is counted in /metrics" "$M" "fleetgate_signer_restarts_total [1-9]"

# A signer that keeps dying: the gateway says so and exits non-zero
# (8 deaths within 60 s; the backoff between them adds up to about 5 s).
for _ in $(seq 300); do
  gw_alive || break
  s=$(pgrep -P "$MONITOR" -x fg-signer || true)
  [ -n "$s" ] && kill -9 $s 2>/dev/null
  sleep 0.1
done
rc=0
if gw_alive; then
  fail "the gateway is still up after 30 s of killing its signers"
  kill -9 "$GW_PID"
fi
wait "$GW_PID" || rc=$?
GW_PID=
check "the gateway stopped with a non-zero status ($rc)" test "$rc" -ne 0
check "the monitor said it gave up" grep -q "deaths within 60 s: giving up" "$T/gw.log"
check "the gateway said why it stops" grep -q "the signer's monitor has stopped" "$T/gw.log"
check "no signer or monitor is left behind" sh -c "! pgrep -x fg-signer -P $MONITOR && ! kill -0 $MONITOR 2>/dev/null"

# A CA key the signer cannot load stops the start, with the reason.
mv "$GW/ca/ca.key" "$GW/ca/ca.key.away"
rc=0
"$FLEETGATED" --state "$GW" 2>"$T/nokey.log" || rc=$?
mv "$GW/ca/ca.key.away" "$GW/ca/ca.key"
check "without its CA key the gateway does not start ($rc)" test "$rc" -ne 0
check "... and the log names the key file" grep -q "ca/ca.key" "$T/nokey.log"
check "... and says the signer will not be restarted" grep -q "cannot load a CA key" "$T/nokey.log"

finish
