#!/usr/bin/env bash
# The MinKMS API beside the KES API, side by side in one run (issue 23): kes pinned to one
# core (`--cores 1`), kes-bench on another, alternating KES generate / MinKMS generate /
# KES decrypt / MinKMS decrypt, ROUNDS rounds of DURATION each, over HTTP/1.1 keep-alive
# (H1_CONNS connections) and HTTP/2 (H2_STREAMS streams over one connection). Prints the
# medians over the rounds of ops per server CPU-second, p50 and p99, and MinKMS / KES.
#
#   tools/bench-minkms.sh
#   ROUNDS=5 DURATION=10s tools/bench-minkms.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6s}
H1_CONNS=${H1_CONNS:-32}
H2_STREAMS=${H2_STREAMS:-64}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-7395}
cargo build --release --quiet --bin kes -p kes --bin kes-bench -p kes-bench
KES_BIN=${KES_BIN:-target/release/kes}
BENCH=target/release/kes-bench
TICKS=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

work=$(mktemp -d)
taskset -c "$SERVER_CPU" "$KES_BIN" server --dev --addr "127.0.0.1:$PORT" --cores 1 >"$work/log" 2>&1 &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "Server is up" "$work/log" && break; sleep 0.1; done
export KES_SERVER="https://127.0.0.1:$PORT"
KES_API_KEY=$(awk '/^API Key/ {print $3}' "$work/log")
export KES_API_KEY

# Warm-up (not reported): creates the key, faults in both paths.
for op in generate kms-generate; do
  taskset -c "$LOAD_CPU" "$BENCH" -k -q --op "$op" --create-key -c "$H1_CONNS" -d 2s >/dev/null
done
for round in $(seq "$ROUNDS"); do
  for proto in h1 h2; do
    for op in generate kms-generate decrypt kms-decrypt; do
      if [ "$proto" = h1 ]; then args=(-c "$H1_CONNS"); else args=(--http2 -c "$H2_STREAMS"); fi
      before=$(cpu_ticks "$server_pid")
      json=$(taskset -c "$LOAD_CPU" "$BENCH" -k -q --json --op "$op" -d "$DURATION" "${args[@]}")
      after=$(cpu_ticks "$server_pid")
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$proto" "$op" "$before" "$after" "$json" >>"$work/runs"
    done
  done
done
python3 - "$work/runs" "$TICKS" "$ROUNDS" "$DURATION" "$H1_CONNS" "$H2_STREAMS" <<'PY'
import json, statistics, sys
path, ticks, rounds, duration, h1, h2 = sys.argv[1:7]
runs = {}
for line in open(path):
    rnd, proto, op, before, after, raw = line.rstrip("\n").split("\t", 5)
    j = json.loads(raw)
    cpu_s = (int(after) - int(before)) / int(ticks)
    errors = sum(j["errors"].values())
    runs.setdefault((proto, op), []).append(
        (j["requests"] / cpu_s if cpu_s > 0 else float("nan"), j["throughput"],
         j["latency_us"]["p50"], j["latency_us"]["p99"], errors))
med = lambda xs: statistics.median(xs)
print(f"medians of {rounds} rounds of {duration} per row; server: 1 core, load generator: another")
print()
print("| protocol | op | API | ops per server CPU-s | req/s | p50 µs | p99 µs | errors | MinKMS / KES (ops per CPU-s) |")
print("|---|---|---|---|---|---|---|---|---|")
for proto, label in (("h1", f"HTTP/1.1, {h1} conns"), ("h2", f"h2, {h2} streams")):
    for op in ("generate", "decrypt"):
        kes, kms = runs[(proto, op)], runs[(proto, "kms-" + op)]
        m = {name: [med(x[i] for x in r) for i in range(4)] for name, r in (("KES", kes), ("MinKMS", kms))}
        for name, r in (("KES", kes), ("MinKMS", kms)):
            per_cpu, rate, p50, p99 = m[name]
            ratio = f"{m['MinKMS'][0] / m['KES'][0]:.2f}" if name == "MinKMS" else ""
            print(f"| {label} | {op} | {name} | {per_cpu:.0f} | {rate:.0f} | {p50:.0f} | {p99:.0f} | {sum(x[4] for x in r)} | {ratio} |")
print()
print("per round, ops per server CPU-s:")
for (proto, op), r in runs.items():
    print(f"  {proto} {op:13} " + "  ".join(f"{x[0]:.0f}" for x in r))
PY
