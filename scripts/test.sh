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

cargo build --workspace --locked --all-targets
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --locked --all-targets -- -D warnings
fi
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
fi
cargo test --workspace --locked -- --nocapture --test-threads=2 2>&1 | tee target/test.log

# One closing line for the whole run (cargo prints one per test binary, the last often "0 passed").
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' target/test.log

# The Debian package: built with cargo-deb, installed with dpkg -i, checked, purged.
if [ "$(id -u)" -eq 0 ]; then
  scripts/test-package.sh
else
  echo "SKIP package test: dpkg -i needs root"
fi
