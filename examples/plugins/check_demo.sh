#!/usr/bin/env bash
# A tiny Nagios plugin for the demo: reports a pseudo-random "queue depth"
# with perfdata, WARNING above $1 and CRITICAL above $2 (defaults 70 / 90).
warn=${1:-70}
crit=${2:-90}
depth=$(( RANDOM % 100 ))
perf="depth=${depth};${warn};${crit};0;100"
if (( depth >= crit )); then
  echo "CRITICAL - queue depth ${depth} | ${perf}"
  echo "the queue is nearly full"
  exit 2
elif (( depth >= warn )); then
  echo "WARNING - queue depth ${depth} | ${perf}"
  exit 1
fi
echo "OK - queue depth ${depth} | ${perf}"
exit 0
