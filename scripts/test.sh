#!/usr/bin/env bash
# Every test of Berth, as CI runs it (root): set-up, formatting, lints, the whole cargo
# test suite (unit, root integration tests against a real docker-registry, fuzz smoke),
# then each cargo-fuzz target for a few seconds under libFuzzer, then every benchmark script
# in its 1-run smoke mode.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "test.sh: the suite needs root (namespaces, overlayfs, chown); CI runs as root" >&2; exit 1; }
scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo fuzz (smoke: ${FUZZ_SECONDS:=10}s per target)"
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
FUZZ_LOG=$(mktemp /tmp/berth-fuzz-log-XXXXXX)
trap 'rm -f "$FUZZ_LOG"; rm -rf /tmp/berth-fuzz-unpack-*' EXIT
for target in reference manifest unpack; do
  # cargo-fuzz needs nightly flags; the stable toolchain allows them with RUSTC_BOOTSTRAP.
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -O "$target" -- -max_total_time="$FUZZ_SECONDS" >"$FUZZ_LOG" 2>&1; then
    tail -40 "$FUZZ_LOG"
    echo "fuzz target $target failed" >&2
    exit 1
  fi
  echo "fuzz $target: $(grep -E '^Done' "$FUZZ_LOG" || echo ran)"
done

echo "== cargo test"
TEST_LOG=$(mktemp /tmp/berth-test-log-XXXXXX)
trap 'rm -f "$FUZZ_LOG" "$TEST_LOG"; rm -rf /tmp/berth-fuzz-unpack-*' EXIT
set +e
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$TEST_LOG"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ {p += $4; f += $6} END {print "tests: " p " passed, " f " failed"}' "$TEST_LOG"
[ "$status" = 0 ] || exit "$status"

echo "== benchmarks, 1-run smoke mode (anchors: podman, runc, crun, hyperfine)"
scripts/setup.sh --bench
integration/bench/smoke.sh
