#!/usr/bin/env bash
# Builds kes for linux/arm64 (aarch64-unknown-linux-gnu) with Debian's cross toolchain and
# smoke-tests it under qemu-user: the server on --dev (io_uring is not emulated, so --io auto
# must fall back to epoll and say so), then our arm64 CLI creates a key, generates a data key
# and decrypts its ciphertext back to the same plaintext. Run by tools/test-all.sh with
# DEPLOY_CHECKS=1 (CI).
#
# The build is the release profile without LTO and debuginfo (16 codegen units) to keep CI's
# time down; the shipped release profile only adds thin LTO and line tables on top.
#   Needs: rustup target add aarch64-unknown-linux-gnu
#          apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
set -uo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu

die() {
  echo "arm64-smoke: $*" >&2
  exit 1
}
rustup target list --installed 2>/dev/null | grep -qx "$target" ||
  die "the Rust std for $target is missing: rustup target add $target"
command -v aarch64-linux-gnu-gcc >/dev/null ||
  die "aarch64-linux-gnu-gcc is missing: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
[ -e "$sysroot/lib/ld-linux-aarch64.so.1" ] ||
  die "the arm64 C library is missing: apt-get install libc6-dev-arm64-cross"
command -v qemu-aarch64 >/dev/null || die "qemu-aarch64 is missing: apt-get install qemu-user"

echo "== cargo build --release --target $target (no LTO, no debuginfo)"
start=$(date +%s)
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_DEBUG=0 \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
  cargo build --release --locked --target "$target" --bin kes || die "the arm64 build failed"
echo "arm64 build: $(($(date +%s) - start)) s"
bin=${CARGO_TARGET_DIR:-target}/$target/release/kes
aarch64-linux-gnu-readelf -h "$bin" | grep -q 'Machine: *AArch64' || die "$bin is not an AArch64 ELF"

qemu=(qemu-aarch64 -L "$sysroot")
work=$(mktemp -d)
server=""
cleanup() {
  [ -z "$server" ] || kill "$server" 2>/dev/null
  [ -z "$server" ] || wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${qemu[@]}" "$bin" server --dev --addr "127.0.0.1:$port" >"$work/server.out" 2>&1 &
server=$!
for _ in $(seq 300); do
  grep -q 'kes:v1:' "$work/server.out" && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.2
done
cat "$work/server.out"
api_key=$(grep -o 'kes:v1:[^ ]*' "$work/server.out" | head -1)
[ -n "$api_key" ] || die "the arm64 server did not start under qemu-user (output above)"
grep -q 'linux/aarch64' "$work/server.out" || die "the banner does not say linux/aarch64"
grep -q 'I/O: epoll' "$work/server.out" ||
  die "the server under qemu-user did not run on epoll (io_uring is not emulated)"
grep -q 'using epoll because' "$work/server.out" || die "the epoll fallback was not explained"

export KES_SERVER=https://127.0.0.1:$port KES_API_KEY=$api_key
kes() { "${qemu[@]}" "$bin" "$@"; }
kes key create arm64-smoke -k || die "key create failed"
kes key dek arm64-smoke -k --json >"$work/dek.json" || die "key dek failed"
read -r plaintext ciphertext < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(d["plaintext"], d["ciphertext"])' "$work/dek.json") || die "key dek gave no JSON: $(cat "$work/dek.json")"
kes key decrypt arm64-smoke "$ciphertext" -k --json >"$work/plain.json" || die "key decrypt failed"
got=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["plaintext"])' "$work/plain.json")
[ "$got" = "$plaintext" ] || die "decrypt gave $got, want $plaintext"
echo "arm64 smoke test: server (epoll), key create, dek, decrypt under qemu-user: ok"
