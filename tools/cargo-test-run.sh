#!/usr/bin/env bash
# Runs `cargo test --no-fail-fast ARGS...` (every test binary runs even after one fails),
# shows its output, and summarises it with tools/test-summary.sh: real totals for this run and
# a non-zero exit status when anything failed.
#   tools/cargo-test-run.sh LABEL [cargo test args...]
# With TEST_SUMMARY_FILE set, the summary is appended to that file too.
set -uo pipefail
tools=$(cd "$(dirname "$0")" && pwd)
label=$1
shift
log=$(mktemp)
# Build first and count the test executables, so a run that stops early shows as one.
artifacts=$(mktemp)
trap 'rm -f "$log" "$artifacts"' EXIT
if ! cargo test --no-run --message-format=json-render-diagnostics "$@" >"$artifacts"; then
  summary="tests ($label): the build failed"
  echo "$summary"
  [ -z "${TEST_SUMMARY_FILE:-}" ] || echo "$summary" >>"$TEST_SUMMARY_FILE"
  exit 1
fi
# Test executables only: artifacts built with the test profile (`profile.test`). The plain
# `kes`/`kes-bench` binaries that integration tests run are artifacts too, and their target's
# own `test` flag is true, so the target's flag does not tell.
expected=$(python3 -c '
import json, sys
n = 0
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        n += 1
print(n)
' "$artifacts")
cargo test --no-fail-fast "$@" 2>&1 | tee "$log"
cargo_status=${PIPESTATUS[0]}
summary=$(bash "$tools/test-summary.sh" "$label" "$log" "$cargo_status" "$expected")
status=$?
echo "$summary"
if [ -n "${TEST_SUMMARY_FILE:-}" ]; then
  echo "$summary" >>"$TEST_SUMMARY_FILE"
fi
exit "$status"
