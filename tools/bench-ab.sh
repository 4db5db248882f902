#!/usr/bin/env bash
# A/B of two kes binaries in one run, rounds alternating, for ratios that hold on a shared,
# noisy machine: each row starts `A server --dev --cores 1` (or B's) pinned to SERVER_CPU,
# drives it with kes-bench pinned to LOAD_CPU, and reports ops per server CPU-second.
#
#   tools/bench-ab.sh OLD_KES NEW_KES                  # HTTP/2 generate at 64 and 256 streams
#   OP=decrypt CS="32" EXTRA="" tools/bench-ab.sh A B  # HTTP/1.1 decrypt, 32 connections
#   ROUNDS=5 DURATION=10s tools/bench-ab.sh A B
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 KES_A KES_B" >&2; exit 2; }
A=$1 B=$2
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-6s} OP=${OP:-generate} CS=${CS:-64 256}
EXTRA=${EXTRA---http2}
SERVER_CPU=${SERVER_CPU:-0} LOAD_CPU=${LOAD_CPU:-1} PORT=${PORT:-7431}
BENCH=${KES_BENCH:-target/release/kes-bench}
[ -x "$BENCH" ] || { echo "no kes-bench at $BENCH (cargo build --release -p kes-bench)" >&2; exit 1; }
TICKS=$(getconf CLK_TCK)

row() { # label binary concurrency
  local label=$1 bin=$2 c=$3 log pid before after json
  log=$(mktemp)
  taskset -c "$SERVER_CPU" "$bin" server --dev --addr "127.0.0.1:$PORT" --cores 1 >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q "Server is up" "$log" && break; sleep 0.1; done
  export KES_SERVER="https://127.0.0.1:$PORT"
  KES_API_KEY=$(awk '/^API Key/ {print $3}' "$log")
  export KES_API_KEY
  taskset -c "$LOAD_CPU" "$BENCH" -k -q --op "$OP" --create-key -c 8 -d 1s >/dev/null
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  # shellcheck disable=SC2086  # EXTRA is a list of flags
  json=$(taskset -c "$LOAD_CPU" "$BENCH" -k -q --json --op "$OP" $EXTRA -c "$c" -d "$DURATION")
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -f "$log"
  python3 - "$label" "$c" "$json" "$before" "$after" "$TICKS" <<'PY'
import json, sys
label, c, raw, before, after, ticks = sys.argv[1:]
j = json.loads(raw)
cpu = (int(after) - int(before)) / int(ticks)
per_cpu = j["requests"] / cpu if cpu > 0 else float("nan")
lat = j["latency_us"]
print(f"{label}\tc={c}\treq/s={j['throughput']:.0f}\tops/cpu-s={per_cpu:.0f}\t"
      f"p50={lat['p50']:.0f}\tp99={lat['p99']:.0f}\terrors={sum(j['errors'].values())}")
PY
}

echo "# A=$A B=$B op=$OP $EXTRA duration=$DURATION rounds=$ROUNDS"
for _ in $(seq "$ROUNDS"); do
  for c in $CS; do
    row A "$A" "$c"
    row B "$B" "$c"
  done
done
