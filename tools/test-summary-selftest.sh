#!/usr/bin/env bash
# Self-test of the test command's summary (tools/test-summary.sh, tools/cargo-test-run.sh),
# run by tools/test-all.sh (and so by CI) before the real tests:
#  1. canned output of real cargo runs (tools/testdata/, from a small crate whose first
#     integration binary fails, the second aborts and the third passes) must give the right
#     totals, name the failed and crashed binaries, and the right exit status;
#  2. the runner itself on that small crate, built here: a failing early binary must not stop
#     the later ones (`--no-fail-fast`), and the totals and exit status must be right.
set -uo pipefail
cd "$(dirname "$0")/.."
tools=$PWD/tools
data=$tools/testdata
fails=0

# expect NAME WANT_STATUS WANT_OUTPUT -- COMMAND...
expect() {
  local name=$1 want_status=$2 want=$3
  shift 4
  local out status
  out=$("$@" 2>&1)
  status=$?
  if [ "$status" -ne "$want_status" ] || [ "$out" != "$want" ]; then
    echo "FAIL $name: exit $status (want $want_status)" >&2
    echo "--- got:" >&2
    echo "$out" >&2
    echo "--- want:" >&2
    echo "$want" >&2
    fails=$((fails + 1))
  else
    echo "ok   $name"
  fi
}

summary=$tools/test-summary.sh
expect "a failed and a crashed binary, later binaries still counted" 1 \
  "tests (x): 4 passed, 1 failed, 1 ignored in 5 binaries, 1 without a result
  tests/a_fail.rs: 1 failed
  tests/b_crash.rs: ended without a test result (crashed or killed?)" \
  -- bash "$summary" x "$data/cargo-test-failures.log" 101 4
expect "a run that stopped at the first failure (no --no-fail-fast)" 1 \
  "tests (x): 2 passed, 1 failed, 0 ignored in 2 binaries
  tests/a_fail.rs: 1 failed
  only 2 of the 4 test binaries ran (the run stopped early)" \
  -- bash "$summary" x "$data/cargo-test-fail-fast.log" 101 4
expect "all passed" 0 \
  "tests (x): 3 passed, 0 failed, 1 ignored in 2 binaries" \
  -- bash "$summary" x "$data/cargo-test-ok.log" 0 2
expect "all results ok but cargo failed" 1 \
  "tests (x): 3 passed, 0 failed, 1 ignored in 2 binaries
  cargo test exited with status 101" \
  -- bash "$summary" x "$data/cargo-test-ok.log" 101 2
expect "no binary ran" 1 \
  "tests (x): 0 passed, 0 failed, 0 ignored in 0 binaries
  no test binary ran (did the build fail?)" \
  -- bash "$summary" x /dev/null 101

# The runner on a real crate: a_fail fails, b_crash aborts, c_pass must still run.
demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
mkdir -p "$demo/src" "$demo/tests"
printf '[package]\nname = "demo"\nversion = "0.1.0"\nedition = "2021"\n[workspace]\n' >"$demo/Cargo.toml"
echo '#[test] fn unit() {}' >"$demo/src/lib.rs"
# A binary, as kes has: integration tests build it as a plain artifact, which is no test
# executable and must not be counted as one that did not run.
echo 'fn main() {}' >"$demo/src/main.rs"
printf '#[test] fn one() {}\n#[test] fn two() { panic!("boom") }\n' >"$demo/tests/a_fail.rs"
printf '#[test] fn x() { std::process::abort() }\n' >"$demo/tests/b_crash.rs"
printf '#[test] fn one() {}\n#[test] fn two() {}\n#[test] #[ignore] fn three() {}\n' \
  >"$demo/tests/c_pass.rs"
run_demo() {
  (cd "$demo" && CARGO_TARGET_DIR="$demo/target" TEST_SUMMARY_FILE="$demo/summary" \
    bash "$tools/cargo-test-run.sh" demo --lib --tests >"$demo/out" 2>&1)
  echo "exit $?"
  cat "$demo/summary"
}
expect "the runner keeps going after a failing early binary" 0 \
  "exit 1
tests (demo): 4 passed, 1 failed, 1 ignored in 5 binaries, 1 without a result
  tests/a_fail.rs: 1 failed
  tests/b_crash.rs: ended without a test result (crashed or killed?)" \
  -- run_demo

if [ "$fails" -ne 0 ]; then
  echo "test summary self-test: $fails failed" >&2
  exit 1
fi
echo "test summary self-test: all passed"
