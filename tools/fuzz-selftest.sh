#!/usr/bin/env bash
# Self-test of tools/fuzz.sh, run by tools/test-all.sh (and so by CI) before the real fuzz
# runs: with a stand-in `cargo` whose fuzz run crashes without leaving an artifact (libFuzzer
# exits 1 on a deadly signal, a leak or a timeout), fuzz.sh must fail and name the target
# instead of printing "all fuzz targets ran clean"; with one whose run passes, it must pass.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/test-versions.sh
. tools/test-versions.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/tree/tools" "$work/tree/fuzz"
cp tools/fuzz.sh tools/test-versions.sh "$work/tree/tools/"
fails=0
for mode in crash pass; do
  cat >"$work/bin/cargo" <<STUB
#!/usr/bin/env bash
case "\$2" in
  --version) echo "cargo-fuzz $CARGO_FUZZ_VERSION" ;;
  list) echo selftest_target ;;
  build) exit 0 ;;
  run)
    if [ "$mode" = crash ]; then
      echo "==1== ERROR: libFuzzer: deadly signal"
      exit 1
    fi
    echo "Done 10 runs in 1 second(s)" ;;
esac
STUB
  chmod +x "$work/bin/cargo"
  out=$(PATH="$work/bin:$PATH" FUZZ_SECONDS=1 bash "$work/tree/tools/fuzz.sh" 2>&1)
  status=$?
  if [ "$mode" = crash ] && { [ "$status" -eq 0 ] || ! grep -q "selftest_target failed" <<<"$out"; }; then
    echo "FAIL fuzz.sh passed a fuzz run that crashed (exit $status):" >&2
    echo "$out" >&2
    fails=$((fails + 1))
  elif [ "$mode" = pass ] && [ "$status" -ne 0 ]; then
    echo "FAIL fuzz.sh failed a clean fuzz run (exit $status):" >&2
    echo "$out" >&2
    fails=$((fails + 1))
  else
    echo "ok   fuzz.sh with a run that ends: $mode"
  fi
done
exit $((fails > 0))
