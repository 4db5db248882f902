#!/usr/bin/env bash
# Summarises the output of one `cargo test` run: per test binary, the libtest result line.
#   tools/test-summary.sh LABEL LOG [CARGO_STATUS [EXPECTED_BINARIES]]
# Prints one line "tests (LABEL): P passed, F failed, I ignored in B binaries" plus a line for
# every binary that failed or ended without a result (a crash, a signal, a hang killed by a
# timeout), and exits 1 when any test failed, any binary gave no result, no binary ran at all
# (a build failure), fewer binaries ran than EXPECTED_BINARIES (the run stopped early), or
# cargo's own exit status (CARGO_STATUS, default 0) was not 0.
# Self-tested on canned cargo output by tools/test-summary-selftest.sh (run by CI).
set -euo pipefail
label=$1
log=$2
cargo_status=${3:-0}
expected=${4:-0}

awk -v label="$label" -v cargo_status="$cargo_status" -v expected="$expected" '
function close_binary() {
  if (current != "" && !have_result) {
    noresult++
    problems = problems sprintf("  %s: ended without a test result (crashed or killed?)\n", current)
  }
  current = ""
  have_result = 0
}
# "     Running tests/api.rs (target/debug/deps/api-0123abcd)" or
# "     Running unittests src/lib.rs (target/debug/deps/kes-0123abcd)"
# "   Doc-tests kes"
/^ +(Running|Doc-tests) / {
  close_binary()
  binaries++
  current = $0
  sub(/^ +(Running|Doc-tests) +/, "", current)
  sub(/ \(.*\)$/, "", current)
  next
}
# "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; ..."
/^test result: / {
  if (current == "") next   # a line a test printed, outside any binary of this run
  have_result = 1
  for (i = 3; i <= NF; i++) {
    n = $(i - 1) + 0
    if ($i ~ /^passed;?$/) p = n
    else if ($i ~ /^failed;?$/) f = n
    else if ($i ~ /^ignored;?$/) ig = n
  }
  passed += p; failed += f; ignored += ig
  if (f > 0 || $3 != "ok.")
    problems = problems sprintf("  %s: %d failed\n", current, f)
  p = f = ig = 0
  current = ""
  next
}
END {
  close_binary()
  printf "tests (%s): %d passed, %d failed, %d ignored in %d binaries", label, passed, failed, ignored, binaries
  if (noresult > 0) printf ", %d without a result", noresult
  printf "\n"
  printf "%s", problems
  bad = 0
  if (binaries == 0) { print "  no test binary ran (did the build fail?)"; bad = 1 }
  else if (binaries < expected + 0) {
    printf "  only %d of the %d test binaries ran (the run stopped early)\n", binaries, expected
    bad = 1
  }
  if (failed > 0 || noresult > 0) bad = 1
  if (cargo_status != 0) {
    if (!bad) printf "  cargo test exited with status %d\n", cargo_status
    bad = 1
  }
  exit bad
}' "$log"
