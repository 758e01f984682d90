#!/bin/bash
# CPU per put of a 3-node `rafter-kv demo` (one process): 256 clients of
# puts after a 5,000-put warm-up, user+system time from /proc/PID/stat
# before and after, and the process's resident set after.
#   benches/scripts/cpu_per_put.sh path/to/rafter-kv [clients] [puts]
# Run from the workspace root after `cargo build --release -p rafter-bench`.
set -euo pipefail
BIN=$1; C=${2:-256}; N=${3:-30000}
B=${B:-target/release/rafter-bench}
D=$(mktemp -d)
"$BIN" demo --data-dir "$D" --base-port 9600 > "$D.log" 2>&1 & PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$D" "$D.log"' EXIT
sleep 4
kill -0 $PID || { echo "the demo did not start:"; cat "$D.log"; exit 1; }
EP=http://127.0.0.1:9601,http://127.0.0.1:9602,http://127.0.0.1:9603
$B kv --endpoints $EP --clients "$C" --ops 5000 --warmup 0.5 > /dev/null
read -r a b <<< "$(awk '{print $14, $15}' /proc/$PID/stat)"
OUT=$($B kv --endpoints $EP --clients "$C" --ops "$N" --warmup 0 | tail -1)
read -r c d <<< "$(awk '{print $14, $15}' /proc/$PID/stat)"
RSS=$(awk '/VmRSS/ {print int($2/1024)}' /proc/$PID/status)
TICK=$(getconf CLK_TCK)
echo "$(basename "$BIN") cpu_us_per_put=$(( (c+d-a-b) * 1000000 / TICK / N )) rss_mib=$RSS :: $(awk '{print "puts/s="$7, "p50_us="$8, "p99_us="$10}' <<< "$OUT")"
