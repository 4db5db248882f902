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
  cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -E "^(stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|Done)" || true
  if ls "artifacts/$t"/crash-* >/dev/null 2>&1 || ls "artifacts/$t"/oom-* >/dev/null 2>&1; then
    echo "fuzz target $t found a crash: see fuzz/artifacts/$t" >&2
    exit 1
  fi
done
echo "all fuzz targets ran clean"
