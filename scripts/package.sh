#!/usr/bin/env bash
# Builds the Debian package with cargo-deb: release binary, systemd unit (rendered from
# examples/halo.toml by the binary itself), example config, shell completions and man page
# (generated from the binary's own command-line definitions). Prints the .deb's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null; then
  echo "package.sh: installing cargo-deb" >&2
  cargo install --locked --quiet cargo-deb@3.8.0
fi
# The package carries no lab (a development tool: namespaces, a test CA); see the README.
cargo build --quiet --locked --release -p halo --no-default-features
scripts/assets.sh
cargo deb --quiet --locked --no-build -p halo
ls -t target/debian/halo_*.deb | head -1
