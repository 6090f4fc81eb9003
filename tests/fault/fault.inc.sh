# Helpers for the fault tests (docs/reliability.md), sourced after
# tests/integration/lib.sh. The faults come from tests/tools/fg-fault.c, an
# LD_PRELOAD library: fault_init maps one control file into every process
# started through fault_wrap, and fault_set changes what fails, while they
# run.
FAULT_LIB="$FG_BUILD/tests/libfg-fault.so"
[ -f "$FAULT_LIB" ] || die "no $FAULT_LIB: build the tree first"
# an ASan build wants its runtime first among the preloaded libraries
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"

# fault_init MATCH: the control file, and the substrings of the paths whose
# writes and syncs the faults hit (':'-separated).
fault_init() {
  FAULT_CTL="$T/fault.ctl"
  FAULT_MATCH=$1
  head -c 4096 /dev/zero >"$FAULT_CTL"
}

# fault_wrap NAME PROGRAM: $T/NAME, a program that runs PROGRAM with the
# fault library (the test's own sqlite3 and fleetgate commands run without).
fault_wrap() {
  local name=$1 prog=$2
  cat >"$T/$name" <<W
#!/bin/sh
FG_FAULT_CTL='$FAULT_CTL' FG_FAULT_MATCH='$FAULT_MATCH' LD_PRELOAD='$FAULT_LIB' exec '$prog' "\$@"
W
  chmod +x "$T/$name"
  echo "$T/$name"
}

# fault_set "op=... err=... skip=N count=N clock=S": the new fault, with the
# counters zeroed; written in place (the file stays 4096 bytes: a process
# has it mapped). fault_clear: no fault, no clock shift.
fault_set() {
  printf '%-1024s' "$1" | tr -d '\n' | dd of="$FAULT_CTL" bs=1024 count=1 conv=notrunc status=none
  head -c 16 /dev/zero | dd of="$FAULT_CTL" bs=1 seek=1024 conv=notrunc status=none
}
fault_clear() { fault_set ""; }

# fault_seen, fault_failed: matching calls seen, and failed, since fault_set
fault_seen() { od -An -t u8 -j 1024 -N 8 "$FAULT_CTL" | tr -d ' '; }
fault_failed() { od -An -t u8 -j 1032 -N 8 "$FAULT_CTL" | tr -d ' '; }

# store_consistent DESC: the invariants that hold after any fault: the
# database is intact, the audit chain verifies, no serial is used twice,
# every certificate has its serial's write-ahead reservation, and every
# certificate an agent holds is in the store byte for byte.
store_consistent() {
  local d=$1 bad=0 c s der
  expect_eq "$d: integrity_check" "$(sql 'pragma integrity_check')" "ok"
  check "$d: audit verify" "$FLEETGATE" audit verify --state "$GW"
  expect_eq "$d: no duplicate serial" \
    "$(sql 'select count(*) - count(distinct serial_hex) from certificates')" "0"
  expect_eq "$d: every certificate has its write-ahead reservation" \
    "$(sql 'select count(*) from certificates c where not exists (select 1 from serials s where s.serial_hex = c.serial_hex)')" "0"
  for c in "$T"/agents/*/default.crt; do
    [ -s "$c" ] || continue
    s=$(openssl x509 -in "$c" -noout -serial | cut -d= -f2)
    der=$(openssl x509 -in "$c" -outform DER | xxd -p | tr -d '\n' | tr a-f A-F)
    [ "$(sql "select hex(der) from certificates where serial_hex = '$s'")" = "$der" ] ||
      { bad=$((bad + 1)); echo "# $c: serial $s is not in the store as the agent holds it"; }
  done
  expect_eq "$d: every certificate an agent holds is recorded" "$bad" "0"
}
