#!/bin/bash
# fleetgated, once the init job has made its state.
source /usr/local/lib/fleetgate-lab/common.sh
wait_for 600 "the init job (docker/lab/init.sh)" test -e "$STATE/.lab-ready"
exec fleetgated --state "$STATE" --log-level "${LAB_LOG_LEVEL:-info}"
