#!/usr/bin/env bash
# The test command: installs the system packages the tests use, then runs every test.
# Root-only tests (network namespaces, real keepalived --config-test) run when this is root;
# under CI=true they are mandatory and fail rather than skip.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  scripts/setup.sh
elif [ "${CI:-}" = "true" ]; then
  echo "test.sh: CI must run as root (network-namespace tests)" >&2
  exit 2
else
  echo "test.sh: not root: skipping package installation; root-only tests will say they skip" >&2
fi

# The tests' build carries the faults they inject (feature test-hooks); no other build does.
features=(--features halo/test-hooks)
cargo build --workspace --locked --all-targets "${features[@]}"
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --locked --all-targets "${features[@]}" -- -D warnings
  cargo clippy --workspace --locked --all-targets -- -D warnings
fi
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
fi
# The container image, built once (it also builds the release binaries the package test uses);
# the image tests run it and rebuild it to compare digests. Only root has buildah's storage.
if [ "$(id -u)" -eq 0 ]; then
  HALO_IMAGE="$PWD/$(scripts/image.sh | tail -1)"
  export HALO_IMAGE
fi
# A failing test must not stop the run before the closing line: cargo's own status is kept.
cargo_status=0
cargo test --workspace --locked --no-fail-fast "${features[@]}" -- --nocapture --test-threads=2 2>&1 | tee target/test.log || cargo_status=$?

# The Debian package: built with cargo-deb, installed with dpkg -i, checked, purged; it counts as
# one test in the closing line.
package=0
if [ "$(id -u)" -eq 0 ]; then
  # The tests' own build (with the hooks), for the package test to prove its grep can find them.
  HOOKED_BINARY=target/debug/halo scripts/test-package.sh 2>&1 | tee -a target/test.log || package=1
else
  echo "SKIP package_test: dpkg -i needs root" | tee -a target/test.log
  package=2
fi

# The monitoring files (alerting rules, their unit tests, the dashboard) against a live halo on
# loopback: promtool and the tests' own build, root or not; one test in the closing line. Outside
# CI a missing promtool skips it (status 77, after its SKIP line).
monitoring=0
scripts/test-monitoring.sh 2>&1 | tee -a target/test.log || monitoring=$?
case "$monitoring" in
  0) ;;
  77) monitoring=2 ;;
  *) monitoring=1 ;;
esac

# One closing line for the whole run (cargo prints one per test binary, the last often "0 passed").
# A test that skipped (outside CI only: not root, a tool missing) printed `SKIP name: why` and
# returned, which cargo counts as passed: it is counted as skipped here instead. The scripts'
# outcomes (0 passed, 1 failed, 2 skipped) count one test each; a script's SKIP line is no cargo
# test that passed.
awk -v scripts="$package $monitoring" '
  /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  /SKIP [A-Za-z0-9_]+: / { s++ }
  END {
    n = split(scripts, outcome, " ")
    for (i = 1; i <= n; i++) { if (outcome[i] == 0) p++; else if (outcome[i] == 1) f++; else k++ }
    printf "tests: %d passed, %d failed, %d skipped\n", p - (s - k), f, s
    exit (f > 0)
  }' target/test.log
# A build failure prints no "test result" line: cargo's status says it.
exit "$cargo_status"
