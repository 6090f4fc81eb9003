#!/usr/bin/env bash
# A full or failing disk under the agent's install (docs/reliability.md):
# each write and each sync of the slot's files (key, certificate, chain,
# their .prev copies and temporary files) fails in turn during a renewal.
# Then the disk fills at each of those calls and stays full (every later
# write fails too, the rollback's included). Each time the agent says what
# failed, the installed key, certificate and
# chain are the ones from before, byte for byte, and the next run with
# room on the disk installs the certificate the gateway issued for that
# same request (no second issuance).
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/fault.inc.sh"

gw_init
gw_start
bundle r
agent_conf r >/dev/null
R="$T/agents/r"
check "enroll" agent r
fault_init "$R/default"
AGENT=$(fault_wrap fleetgate-agent "$AGENT")

for mode in "write ENOSPC 1" "sync EIO 1" "write ENOSPC 0"; do
  set -- $mode
  op=$1 err=$2 count=$3
  what="$op $err"; [ "$count" = 0 ] && what="$op $err, disk stays full"
  kept=0 said=0 completed=0 twice=0 tried=0
  for k in $(seq 0 100); do
    cp "$R/default.key" "$T/before.key"; cp "$R/default.crt" "$T/before.crt"
    cp "$R/default-chain.crt" "$T/before-chain.crt"
    certs_before=$(sql 'select count(*) from certificates')
    fault_set "op=$op err=$err skip=$k count=$count"
    rc=0; agent r --renew-now || rc=$?
    if [ "$(fault_failed)" = 0 ]; then
      expect_eq "$what: the renewal past the last $op succeeded" "$rc" "0"
      break
    fi
    fault_clear
    tried=$((tried + 1))
    if cmp -s "$T/before.key" "$R/default.key" && cmp -s "$T/before.crt" "$R/default.crt" &&
       cmp -s "$T/before-chain.crt" "$R/default-chain.crt"; then
      kept=$((kept + 1))
    else
      echo "# $what #$k: the installed files changed:"; cat "$T/r.out"
    fi
    if [ "$rc" != 0 ] && grep -Eq "(No space left on device|Input/output error).*(put back|nothing was changed)" "$T/r.out"; then
      said=$((said + 1))
    else
      echo "# $what #$k: agent exit $rc:"; cat "$T/r.out"
    fi
    # room again: the same request completes with the certificate issued for it
    issued=$(sql 'select serial_hex from certificates order by rowid desc limit 1')
    if agent r && [ "$(openssl x509 -in "$R/default.crt" -noout -serial | cut -d= -f2)" = "$issued" ]; then
      completed=$((completed + 1))
    else
      echo "# $what #$k: the next run did not install serial $issued:"; cat "$T/r.out"
    fi
    [ "$(sql 'select count(*) from certificates')" = $((certs_before + 1)) ] || twice=$((twice + 1))
  done
  echo "# $what: $tried calls of the install failed one at a time"
  check "$what: the install's calls were failed" test "$tried" -ge 3
  expect_eq "$what: the previous key, certificate and chain stayed installed" "$kept" "$tried"
  expect_eq "$what: the agent said what failed and that the files were kept" "$said" "$tried"
  expect_eq "$what: the next run installed the same request's certificate" "$completed" "$tried"
  expect_eq "$what: no request was issued twice" "$twice" "0"
done
check "the installed certificate matches the key" \
  test "$(openssl x509 -in "$R/default.crt" -noout -pubkey | sha256sum)" = "$(openssl pkey -in "$R/default.key" -pubout | sha256sum)"
store_consistent "after the agent's faults"
finish
