#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time, seeded from fuzz/seeds (the spec's
# vectors). Stable Rust only here, so RUSTC_BOOTSTRAP=1 lets cargo-fuzz use -Z flags.
#   tools/fuzz.sh                       # ~20 s per target (CI)
#   FUZZ_SECONDS=600 tools/fuzz.sh      # long local runs
#   tools/fuzz.sh http_head ciphertext  # some targets only
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${FUZZ_SECONDS:-20}
export RUSTC_BOOTSTRAP=1
# shellcheck source=tools/test-versions.sh
. tools/test-versions.sh
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked || {
    echo "fuzz: could not install cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    exit 1
  }
fi
cd fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== fuzz $t (${SECONDS_PER_TARGET}s)"
  set +e
  cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -E "^(stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|Done)"
  run_status=${PIPESTATUS[0]}
  set -e
  # libFuzzer exits non-zero on a crash, leak, timeout or OOM (and writes the input to
  # artifacts/); a target that did not build or run fails the same way.
  if [ "$run_status" -ne 0 ] || compgen -G "artifacts/$t/*-*" >/dev/null; then
    echo "fuzz target $t failed (exit $run_status): see fuzz/artifacts/$t" >&2
    exit 1
  fi
done
echo "all fuzz targets ran clean"
