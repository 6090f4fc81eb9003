#!/usr/bin/env bash
# Logs under systemd: with stderr as the journal's stream (JOURNAL_STREAM
# names its device:inode, as systemd sets it for a service), fleetgated
# and fleetgate-agent send journal entries with fields. The journal is the
# real systemd-journald, started in a mount namespace of the test's own
# (tmpfs over /run/systemd and /run/log), read back with journalctl.
[ "$(id -u)" = 0 ] || { echo "# needs root (a mount namespace for a private journald)"; exit 77; }
JOURNALD=/lib/systemd/systemd-journald
[ -x "$JOURNALD" ] || { echo "# no $JOURNALD (Debian package systemd)"; exit 77; }
if [ -z "${FG_IN_NS:-}" ]; then
  FG_IN_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi
. "$(dirname "$0")/lib.sh"

mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/journal
mount -t tmpfs tmpfs /run/log
"$JOURNALD" >"$T/journald.log" 2>&1 &
JD_PID=$!
for _ in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
check "the test's journald listens" test -S /run/systemd/journal/socket
entries() { journalctl -D /run/log/journal -o json --no-pager 2>/dev/null; }

gw_init
# stderr goes to a file; JOURNAL_STREAM names that file, as systemd names
# the journal's stream socket.
: >"$T/gw.log"
export JOURNAL_STREAM="$(stat -c '%d:%i' "$T/gw.log")"
"$FLEETGATED" --state "$GW" 2>>"$T/gw.log" &
GW_PID=$!
for _ in $(seq 100); do entries | grep -q '"listening on' && break; sleep 0.1; done
unset JOURNAL_STREAM
E=$(entries)
check "fleetgated's start is in the journal" grep -q 'listening on' <<<"$E"
check "... not on stderr" sh -c "! grep -q 'listening on' '$T/gw.log'"
check "the signer (seccomp: no new sockets) writes text to stderr instead" grep -q "signer sandbox: signer pid" "$T/gw.log"

bundle j1 --uses 1 --ttl 1h
agent_conf j1 >/dev/null
check "an agent enrolls" agent j1
SERIAL=$("$FLEETGATE" cert list --state "$GW" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["serial"])')
DEVICE=$("$FLEETGATE" device list --state "$GW" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
for _ in $(seq 50); do entries | grep -q '"SERIAL"' && break; sleep 0.1; done
ENTRY=$(entries | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    if e.get("SYSLOG_IDENTIFIER") == "fleetgated" and e.get("FLEETGATE_COMPONENT") == "enroll" and "SERIAL" in e:
        print(e.get("PRIORITY"), e.get("REQUEST_ID", ""), e["DEVICE"], e["SERIAL"], e["MESSAGE"].split(" ")[0])
')
read -r PRIO RID DEV SER FIRST <<<"$ENTRY"
expect_eq "the enrollment entry has PRIORITY 6 (info)" "${PRIO:-}" "6"
expect_match "... a REQUEST_ID" "${RID:-}" "^[0-9a-f]{32}$"
expect_eq "... DEVICE, the enrolled device" "${DEV:-}" "$DEVICE"
expect_eq "... SERIAL, the certificate's serial" "${SER:-}" "$SERIAL"
expect_eq "... and a MESSAGE that starts with the component" "${FIRST:-}" "enroll"
gw_stop || true

# The agent, the same way.
gw_start
bundle j2 --uses 1 --ttl 1h
agent_conf j2 >/dev/null
: >"$T/agent.err"
JOURNAL_STREAM="$(stat -c '%d:%i' "$T/agent.err")" \
  "$AGENT" --config "$T/agents/j2/agent.conf" --once --log-level info >/dev/null 2>>"$T/agent.err" || true
for _ in $(seq 50); do entries | grep -q '"SYSLOG_IDENTIFIER":"fleetgate-agent"' && break; sleep 0.1; done
check "fleetgate-agent's lines are in the journal" sh -c "journalctl -D /run/log/journal -o json --no-pager | grep -q '\"SYSLOG_IDENTIFIER\":\"fleetgate-agent\"'"
gw_stop || true

# Without JOURNAL_STREAM (or with one that is not stderr), text on stderr.
: >"$T/gw.log"
JOURNAL_STREAM="1:1" gw_start
check "with JOURNAL_STREAM naming another file, text on stderr" grep -q "listening on" "$T/gw.log"
gw_stop || true
kill "$JD_PID" 2>/dev/null; wait "$JD_PID" 2>/dev/null || true
finish
