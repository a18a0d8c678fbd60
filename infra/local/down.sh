#!/usr/bin/env bash
# Stops what up.sh started (the processes it listed in $PLATE_LOCAL_DIR/pids), gracefully first:
# the edges drain on SIGTERM.
set -euo pipefail
DIR="${PLATE_LOCAL_DIR:-/tmp/plate-local}"
[[ -f "$DIR/pids" ]] || { echo "nothing to stop in $DIR" >&2; exit 0; }
while read -r pid name; do
  kill -TERM "$pid" 2>/dev/null && echo "stopping $name ($pid)" || true
done <"$DIR/pids"
for _ in $(seq 1 150); do
  alive=0
  while read -r pid _; do kill -0 "$pid" 2>/dev/null && alive=1; done <"$DIR/pids"
  ((alive == 0)) && break
  sleep 0.1
done
while read -r pid name; do
  kill -KILL "$pid" 2>/dev/null && echo "killed $name ($pid)" || true
done <"$DIR/pids"
rm -f "$DIR/pids"
