#!/usr/bin/env bash
# The agent confines itself (sandbox = required, the default): a running
# agent has no_new_privs and a Landlock ruleset; code run inside it (an
# LD_PRELOAD library standing in for an attacker) cannot write outside its
# paths, read the CA key, exec or connect elsewhere; enrollment, renewal and
# the reload hook (run by the hook runner, outside the sandbox) still work;
# a SIGHUP that would need more than the sandbox allows is refused; and
# sandbox = required on a kernel without Landlock is a clear error.
. "$(dirname "$0")/lib.sh"

INTRUDE="$FG_BUILD/tests/libfg-intrude.so"
NOLL="$FG_BUILD/tests/no-landlock"
# In a sanitizer build the preloaded library comes before the ASan runtime.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"

abi=$(python3 -c 'import ctypes; print(max(ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1), 0))')
if [ "$abi" -lt 1 ]; then
  echo "1..0 # SKIP this kernel has no Landlock"
  exit 77
fi

gw_init
sed -i 's/^checkin_interval = .*/checkin_interval = 2/' "$GW/fleetgated.conf"
gw_start

# The layout a careful host uses: the configuration in a directory of its
# own (read-only to the agent), the bundle, state and certificates apart.
S="$T/sb"
mkdir -p "$S/conf" "$S/bundle" "$S/certs"
bundle sb1
mv "$T/sb1.bundle" "$S/bundle/sb1.bundle"
cat > "$S/conf/agent.conf" <<CONF
bundle = $S/bundle/sb1.bundle
state_dir = $S/state
request_timeout = 5s
checkin_interval = 2s
[slot default]
key = $S/certs/default.key
cert = $S/certs/default.crt
chain = $S/certs/default-chain.crt
reload = echo "\$FLEETGATE_SLOT" >> $S/reloads; touch $S/hook-was-here
CONF

LD_PRELOAD="$INTRUDE" FG_INTRUDE_WRITE="$S/intruder-was-here" FG_INTRUDE_READ="$GW/ca/ca.key" \
  FG_INTRUDE_PORT=1 FG_INTRUDE_INSIDE="$S/state/intruder-inside" \
  "$AGENT" --config "$S/conf/agent.conf" --log-level debug 2>"$T/sb.log" &
APID=$!
for _ in $(seq 200); do grep -q "slot default: enrolled" "$T/sb.log" && break; sleep 0.1; done
log=$(cat "$T/sb.log")
expect_match "the daemon enrolled under the sandbox" "$log" "slot default: enrolled"
expect_match "it logs what the sandbox applies" "$log" \
  "sandbox: landlock ABI [0-9]+, [0-9]+ paths( \([0-9]+ absent\))?, tcp connect 1 port, bind 0 ports.*; no_new_privs; reload hooks run by the hook runner, pid [0-9]+ \(sandbox = required\)"
check "no note about a writable configuration" test -z "$(grep 'sandbox: note' "$T/sb.log")"
expect_eq "the agent has no_new_privs" "$(sed -n 's/^NoNewPrivs:[[:space:]]*//p' /proc/$APID/status)" "1"
hpid=$(sed -n 's/.*hook runner, pid \([0-9]*\).*/\1/p' "$T/sb.log" | head -n 1)
check "the hook runner runs" kill -0 "$hpid"
expect_eq "the hook runner is outside the sandbox (no no_new_privs)" \
  "$(sed -n 's/^NoNewPrivs:[[:space:]]*//p' /proc/$hpid/status)" "0"

# What the code inside the agent could not do.
expect_match "inside the agent: writing outside its paths is refused" "$log" \
  "fg-intrude: write $S/intruder-was-here: Permission denied"
check "and nothing was written there" test ! -e "$S/intruder-was-here"
expect_match "inside the agent: reading the gateway's CA key is refused" "$log" \
  "fg-intrude: read $GW/ca/ca.key: Permission denied"
expect_match "inside the agent: running a shell is refused" "$log" "fg-intrude: exec /bin/sh: Permission denied"
expect_match "inside the agent: TCP to another port is refused by the sandbox (not by the peer)" "$log" \
  "fg-intrude: connect 127.0.0.1:1: Permission denied"
expect_match "inside the agent: its own state directory is writable" "$log" \
  "fg-intrude: inside $S/state/intruder-inside: ok"

# The reload hook ran, outside the sandbox's write limits.
for _ in $(seq 50); do [ -e "$S/hook-was-here" ] && break; sleep 0.1; done
expect_eq "the reload hook ran once, with its environment" "$(cat "$S/reloads" 2>/dev/null)" "default"
check "the hook wrote outside the agent's paths" test -e "$S/hook-was-here"
check "the certificate chains to the CA" openssl verify -CAfile "$GW/ca/ca.crt" "$S/certs/default.crt"

# Renewal through the daemon: a command from the gateway.
first=$(openssl x509 -in "$S/certs/default.crt" -noout -serial)
"$FLEETGATE" device command --state "$GW" --group test renew >/dev/null
for _ in $(seq 150); do [ "$(wc -l < "$S/reloads")" -ge 2 ] && break; sleep 0.1; done
second=$(openssl x509 -in "$S/certs/default.crt" -noout -serial)
check "the confined daemon renewed on the gateway's command" test "$first" != "$second"
expect_eq "the reload hook ran again" "$(wc -l < "$S/reloads")" "2"

# SIGHUP with a configuration the sandbox applied at start cannot serve.
cp "$S/conf/agent.conf" "$S/agent.conf.good"
mkdir -p "$T/elsewhere"
sed -i "s|^state_dir = .*|state_dir = $T/elsewhere/state|" "$S/conf/agent.conf"
kill -HUP $APID
for _ in $(seq 50); do grep -q "reload failed" "$T/sb.log" && break; sleep 0.1; done
expect_match "a reload needing a new writable path is refused, naming it" "$(cat "$T/sb.log")" \
  "reload failed, keeping the running configuration: the sandbox applied at start does not let the agent write $T/elsewhere/state; restart the agent"
cp "$S/agent.conf.good" "$S/conf/agent.conf"
sed -i "s|^reload = .*|reload = touch $S/other-command|" "$S/conf/agent.conf"
kill -HUP $APID
for _ in $(seq 50); do [ "$(grep -c "reload failed" "$T/sb.log")" -ge 2 ] && break; sleep 0.1; done
expect_match "a reload with a new reload command is refused" "$(cat "$T/sb.log")" \
  "reload failed, keeping the running configuration: the reload command or paths of slot default changed"
cp "$S/agent.conf.good" "$S/conf/agent.conf"
sed -i "s|^checkin_interval = .*|checkin_interval = 3s|" "$S/conf/agent.conf"
kill -HUP $APID
for _ in $(seq 50); do grep -q "configuration reloaded" "$T/sb.log" && break; sleep 0.1; done
expect_match "a reload that fits the sandbox is taken" "$(cat "$T/sb.log")" "configuration reloaded from"
check "the daemon is still running" kill -0 $APID

kill -TERM $APID
rc=0; wait $APID || rc=$?
expect_eq "the confined daemon exits 0 on SIGTERM" "$rc" "0"
for _ in $(seq 50); do kill -0 "$hpid" 2>/dev/null || break; sleep 0.1; done
check "the hook runner ended with the agent" test ! -e /proc/$hpid/status -o "$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' /proc/$hpid/status 2>/dev/null)" = Z

# --once is confined as well: a renewal with the hook.
rc=0; "$AGENT" --config "$S/conf/agent.conf" --once --renew-now --log-level info >"$T/once.out" 2>&1 || rc=$?
expect_eq "--once renews under the sandbox" "$rc" "0"
expect_match "--once logs the sandbox" "$(cat "$T/once.out")" "sandbox: landlock ABI [0-9]+.*no_new_privs"
expect_eq "the reload hook ran a third time" "$(wc -l < "$S/reloads")" "3"

# The configuration next to the certificates: the agent says it may write it.
bundle sb2
agent_conf sb2 >/dev/null
rc=0; "$AGENT" --config "$T/agents/sb2/agent.conf" --once --log-level info >"$T/sb2.out" 2>&1 || rc=$?
expect_eq "the default layout of the tests enrolls under the sandbox" "$rc" "0"
expect_match "and notes that its configuration is writable to it" "$(cat "$T/sb2.out")" \
  "sandbox: note: $T/agents/sb2/agent.conf lies in $T, which the agent may write"

# A kernel without Landlock (no-landlock makes the probe fail with ENOSYS,
# as such a kernel does).
rc=0; "$NOLL" "$AGENT" --config "$S/conf/agent.conf" --once >"$T/noll.out" 2>&1 || rc=$?
expect_eq "sandbox = required without Landlock: exit 2" "$rc" "2"
expect_match "and it says what is missing and how to choose best-effort" "$(cat "$T/noll.out")" \
  "^fleetgate-agent: sandbox = required, but this kernel has no Landlock .*; run on a kernel that has it, or set sandbox = best-effort to run without it$"
{ echo "sandbox = best-effort"; cat "$S/conf/agent.conf"; } > "$S/conf/agent-be.conf"
rc=0; "$NOLL" "$AGENT" --config "$S/conf/agent-be.conf" --once --renew-now --log-level info >"$T/be.out" 2>&1 || rc=$?
expect_eq "sandbox = best-effort without Landlock: runs" "$rc" "0"
expect_match "with a warning" "$(cat "$T/be.out")" "warn .*sandbox = best-effort: this kernel has no Landlock .*; going on without it"
expect_match "and says what applies" "$(cat "$T/be.out")" "sandbox: landlock unavailable; no_new_privs"

# sandbox = off is an explicit choice, and said.
{ echo "sandbox = off"; cat "$S/conf/agent.conf"; } > "$S/conf/agent-off.conf"
rc=0; "$AGENT" --config "$S/conf/agent-off.conf" --once >"$T/off.out" 2>&1 || rc=$?
expect_eq "sandbox = off: runs" "$rc" "0"
expect_match "and warns that the agent is unconfined" "$(cat "$T/off.out")" "sandbox: off .*the agent runs unconfined"
rc=0; { echo "sandbox = maybe"; cat "$S/conf/agent.conf"; } > "$S/conf/agent-bad.conf"
"$AGENT" --config "$S/conf/agent-bad.conf" --once >"$T/bad.out" 2>&1 || rc=$?
expect_eq "an unknown sandbox value is a configuration error" "$rc" "2"
expect_match "naming the choices" "$(cat "$T/bad.out")" "agent-bad.conf:1: sandbox 'maybe' is unknown; use required, best-effort or off"
finish
