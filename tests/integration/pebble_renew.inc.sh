# Renewal against pebble that is validated again; sourced by pebble.inc.sh
# and acme_challenges.sh after lib.sh. pebble writes its log to $T/pebble.log.

# pebble_authzs: how many authorizations pebble has made so far
pebble_authzs() { grep -c "There are now [0-9]* authorizations in the db" "$T/pebble.log" || true; }

# pebble_renew NAME: run_agent NAME --renew-now so that pebble validates the
# renewal again. pebble 2.4 reuses a valid authorization in about 1 order of
# 100 even at PEBBLE_AUTHZREUSE=0 (it makes a new one only when
# rand.Intn(100) > the percentage); when the renewal's order made no new
# authorization, the renewal is repeated, once. RENEWALS: how many ran.
pebble_renew() {
  local a0
  a0=$(pebble_authzs)
  RENEWALS=1
  run_agent "$1" --renew-now || return 1
  if [ "$(pebble_authzs)" = "$a0" ]; then
    echo "# pebble reused a valid authorization for $1's renewal; renewing once more"
    RENEWALS=2
    run_agent "$1" --renew-now || return 1
  fi
}
