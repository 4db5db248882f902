# Pinned versions of what tools/test-all.sh installs besides the Python packages (those are in
# tools/test-requirements.txt). Sourced by tools/test-all.sh, tools/fuzz.sh and
# tools/check-test-tools.sh, which asserts them. Debian packages are pinned to the upstream
# version and Debian revision of bookworm; the trailing `*` accepts bookworm's security
# updates of that same version (the archive keeps only the newest one).
CARGO_FUZZ_VERSION=0.13.2
# h2load and curl with HTTP/2 (tests/http2.rs).
APT_TEST_PACKAGES=("nghttp2-client=1.52.0-1*" "curl=7.88.1-10*")
# The arm64 build and its smoke test (tools/arm64-smoke.sh), the image check
# (deploy/check-image.py: mmdebstrap) and the systemd unit check (deploy/check-service.py:
# systemd-analyze). The Rust std for aarch64 comes from rustup for the toolchain in use.
APT_DEPLOY_PACKAGES=("gcc-aarch64-linux-gnu=4:12.2.0-3*" "libc6-dev-arm64-cross=2.36-8cross1*"
  "binutils-aarch64-linux-gnu=2.40-2*" "qemu-user=1:7.2+dfsg-7*" "mmdebstrap=1.3.5-7*"
  "systemd=252.*")
