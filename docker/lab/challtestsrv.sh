#!/bin/bash
# pebble-challtestsrv: DNS only, for pebble's VA. No default answers: a name
# resolves only once its agent has registered its address (POST /add-a on
# the management port 8055).
source /usr/local/lib/fleetgate-lab/common.sh
exec pebble-challtestsrv -dns01 ":8053" -http01 "" -https01 "" -tlsalpn01 "" \
  -management ":8055" -defaultIPv4 "" -defaultIPv6 ""
