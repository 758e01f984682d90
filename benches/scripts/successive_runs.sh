#!/bin/bash
# Successive runs of 256 put clients on one 3-process rafter-kv cluster on
# loopback, to see what a growing store does to the rate (snapshots,
# flushes), with the leader's commit stalls over the runs
# (commit_stalls.py); then the size of one node's directories.
#   benches/scripts/successive_runs.sh path/to/rafter-kv [runs] [seconds] [serve flags...]
# Run from the workspace root after `cargo build --release -p rafter-bench`.
set -euo pipefail
BIN=$1; R=${2:-3}; T=${3:-8}; shift $(( $# < 3 ? $# : 3 ))
B=${B:-target/release/rafter-bench}
D=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$D"' EXIT
"$BIN" certs --out "$D/tls" --nodes 1,2,3 > /dev/null
PEERS=1=127.0.0.1:9711/127.0.0.1:9701,2=127.0.0.1:9712/127.0.0.1:9702,3=127.0.0.1:9713/127.0.0.1:9703
for i in 1 2 3; do
  "$BIN" serve --id $i --raft-addr 127.0.0.1:971$i --http-addr 127.0.0.1:970$i \
    --data-dir "$D/n$i" --tls-dir "$D/tls" --peers $PEERS --init "$@" > "$D/n$i.log" 2>&1 &
  PIDS+=($!)
done
sleep 4
EP=http://127.0.0.1:9701,http://127.0.0.1:9702,http://127.0.0.1:9703
python3 "$(dirname "$0")/commit_stalls.py" 9701,9702,9703 $(( R * T + R )) > "$D/stalls" &
STALLS=$!
LINE="$(basename "$BIN")"
for _ in $(seq "$R"); do
  LINE="$LINE | $($B kv --endpoints $EP --clients 256 --duration "$T" --warmup 0.5 | tail -1 | awk '{printf "%d/s p99 %.0f ms", $7, $10/1000}')"
done
wait $STALLS || true
MB() { du -sm "$D/n1/$1" | cut -f1; }
echo "$LINE | state $(MB state) MB, log $(MB log) MB, snapshots $(MB snapshots) MB"
cat "$D/stalls"
