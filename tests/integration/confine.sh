#!/usr/bin/env bash
# The daemon's own sandbox (docs/security.md, "The daemon"):
#  - a hostile backend plugin (tests/plugins/hostile.c), loaded into a
#    gateway whose local CA key sits in its state directory, tries from
#    inside the daemon to read the CA key (directly and through /proc), to
#    remove or move it, to write outside what the daemon writes, to connect
#    to a non-loopback address, to listen on another port and to exec a
#    shell: the kernel refuses each with EACCES;
#  - the same plugin with sandbox = "off" reads the key (the probe works);
#  - started as root with user = "...", the daemon switches to that user
#    after binding, keeps the CA key out of reach, enrolls and reloads its
#    policy;
#  - on a kernel without Landlock, sandbox = "required" refuses to start and
#    says how to choose best-effort; best-effort starts and warns.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { echo "# needs root (creates a user for the user switch)"; exit 77; }
NOLL="$FG_BUILD/tests/no-landlock"

mkdir -p "$T/plugins"
ln -s "$FG_BUILD/plugins/local/fleetgate-local.so" "$T/plugins/"
ln -s "$FG_BUILD/tests/fleetgate-hostile.so" "$T/plugins/"
export FLEETGATE_PLUGIN_DIR="$T/plugins"

gw_init
cp "$GW/fleetgated.conf" "$T/fleetgated.conf.orig"
hostile_conf() { # hostile_conf SANDBOX [extra settings]
  cp "$T/fleetgated.conf.orig" "$GW/fleetgated.conf"
  cat >>"$GW/fleetgated.conf" <<CONF
sandbox = "$1"
backends["hostile"] = { plugin = "hostile", ca_key = "$GW/ca/ca.key" ${2:-} }
profiles.default.backend = "hostile"
CONF
}
attempt() { # the outcome the plugin logged last for attempt $1 (fixed string)
  awk -v a="hostile: $1: " 'index($0, a) { r = substr($0, index($0, a) + length(a)) } END { print r }' "$T/gw.log"
}

hostile_conf required
gw_start
check "the daemon logged its Landlock ruleset" grep -Eq "sandbox: daemon pid $GW_PID: landlock ABI [0-9]+, [0-9]+ paths, tcp" "$T/gw.log"
expect_eq "the daemon has no_new_privs" "$(awk '/^NoNewPrivs:/ {print $2}' /proc/$GW_PID/status)" "1"
ST=$("$FLEETGATE" status --state "$GW" || true)
expect_match "fleetgate status shows the daemon's confinement" "$ST" "^daemon confinement: landlock ABI [0-9]+"

bundle h1 --uses 1 --ttl 1h
agent_conf h1 >/dev/null
agent h1 || true
for _ in $(seq 50); do grep -q "hostile: exec /bin/sh" "$T/gw.log" && break; sleep 0.1; done
check "the hostile plugin ran its attempts" grep -q "hostile: exec /bin/sh" "$T/gw.log"
for a in "open the CA key" "open the CA key through /proc/self/root" \
         "open the CA key through the monitor's /proc root" "read the monitor's memory through /proc" \
         "remove the CA key" "list the CA directory" \
         "write a file in /tmp" "write a file at the top of the state directory" "write the policy" \
         "read the configuration again" "connect to 192.0.2.1:443" "listen on port 2222" "exec /bin/sh"; do
  expect_eq "the kernel refused: $a" "$(attempt "$a")" "refused (EACCES)"
done
expect_eq "the kernel refused: signal the monitor" "$(attempt "signal the monitor")" "refused (EPERM)"
expect_eq "the hook runner refused: run /bin/sh" "$(attempt "run /bin/sh through the hook runner")" "refused (EPERM)"
check "... saying it runs only configured hooks" grep -q "is not a hook the configuration names" "$T/gw.log"
expect_match "the kernel refused: move the CA directory" "$(attempt "move the CA directory")" "^refused \((EACCES|EXDEV)\)$"
check "the CA key is still there" test -s "$GW/ca/ca.key"
check "nothing was written in /tmp" test ! -e /tmp/fleetgate-hostile-was-here
check "nothing was written at the top of the state directory" test ! -e "$GW/hostile-was-here"
check "the daemon still serves" gw_alive
gw_stop || true
check "the admin socket is gone with the daemon" test ! -e "$GW/admin.sock"

# The same plugin unconfined: the attempt that matters most succeeds, so
# the refusals above are the sandbox's doing (no network attempt here).
hostile_conf off ', skip = "network,destructive"'
: >"$T/gw.log"
gw_start
bundle h2 --uses 1 --ttl 1h
agent_conf h2 >/dev/null
agent h2 || true
for _ in $(seq 50); do grep -q "hostile: exec /bin/sh" "$T/gw.log" && break; sleep 0.1; done
expect_eq "with sandbox = off the plugin reads the CA key" "$(attempt "open the CA key")" "ALLOWED"
expect_eq "... and execs a shell" "$(attempt "exec /bin/sh")" "ALLOWED"
expect_eq "... and signals the monitor" "$(attempt "signal the monitor")" "ALLOWED"
gw_stop || true
rm -f /tmp/fleetgate-hostile-was-here "$GW/hostile-was-here"

# Started as root with user = "...": the switch after binding.
U=fgtest-daemon
id "$U" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$U"
UID_U=$(id -u "$U")
cp "$T/fleetgated.conf.orig" "$GW/fleetgated.conf"
echo "user = \"$U\"" >>"$GW/fleetgated.conf"
chmod o+x "$T"
: >"$T/gw.log"
gw_start
expect_eq "the daemon runs as $U (real, effective, saved, fs)" \
  "$(awk '/^Uid:/ {print $2, $3, $4, $5}' /proc/$GW_PID/status)" "$UID_U $UID_U $UID_U $UID_U"
expect_eq "... with its group only" "$(awk '/^Groups:/ {print $2}' /proc/$GW_PID/status)" "$(id -g "$U")"
check "the daemon logged the switch" grep -q "now running as user $U" "$T/gw.log"
expect_eq "the store is the user's" "$(stat -c %U "$GW/fleetgate.db")" "$U"
expect_eq "the CA key stays root's, mode 600" "$(stat -c '%U %a' "$GW/ca/ca.key")" "root 600"
bundle u1 --uses 1 --ttl 1h
agent_conf u1 >/dev/null
check "an agent enrolls from the switched daemon" agent u1
check "its certificate chains to the local CA" openssl verify -CAfile "$GW/ca/ca.crt" "$(crt u1)"
# The policy is read through the policy reader: an editor's replacement is seen.
cp "$GW/policy.lua" "$T/policy.new"
echo "-- edited" >>"$T/policy.new"
mv "$T/policy.new" "$GW/policy.lua"
for _ in $(seq 50); do grep -q "policy reloaded (generation 1)" "$T/gw.log" && break; sleep 0.1; done
check "a replaced policy file is reloaded under the sandbox" grep -q "policy reloaded (generation 1)" "$T/gw.log"
bundle u2 --uses 1 --ttl 1h
agent_conf u2 >/dev/null
check "an agent enrolls after the reload" agent u2
gw_stop || true

# A kernel without Landlock.
cp "$T/fleetgated.conf.orig" "$GW/fleetgated.conf"
rc=0
timeout 20 "$NOLL" "$FLEETGATED" --state "$GW" >"$T/noll.log" 2>&1 || rc=$?
check "required: the daemon refuses to start without Landlock ($rc)" test "$rc" -ne 0 -a "$rc" -ne 124
check "... and names Landlock and best-effort" sh -c "grep -i landlock '$T/noll.log' | grep -q best-effort"
echo 'sandbox = "best-effort"' >>"$GW/fleetgated.conf"
: >"$T/gw.log"
FLEETGATED_REAL=$FLEETGATED
FLEETGATED="$T/fleetgated-noll"
printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$NOLL" "$FLEETGATED_REAL" >"$FLEETGATED"
chmod +x "$FLEETGATED"
gw_start
check "best-effort: the daemon starts and warns" grep -qi "warn.*landlock" "$T/gw.log"
bundle b1 --uses 1 --ttl 1h
agent_conf b1 >/dev/null
check "an agent enrolls from the best-effort daemon" agent b1
gw_stop || true
FLEETGATED=$FLEETGATED_REAL

finish
