#!/usr/bin/env bash
# Writes the packages' generated assets into target/assets from the release binary
# target/release/halo, built beforehand: the systemd unit (rendered from examples/halo.toml by the
# binary itself), shell completions and man page (from the binary's own command-line
# definitions). scripts/package.sh (the .deb) and scripts/rpm.sh (the RPM) both use it, so the two
# packages carry the same files.
set -euo pipefail
cd "$(dirname "$0")/.."
halo=target/release/halo
assets=target/assets
[ -x "$halo" ] || { echo "assets.sh: $halo missing: build it first" >&2; exit 1; }
mkdir -p "$assets"
"$halo" generate bash >"$assets/halo.bash"
"$halo" generate zsh >"$assets/_halo"
"$halo" generate fish >"$assets/halo.fish"
"$halo" generate man | gzip -9n >"$assets/halo.1.gz"
"$halo" render systemd -c examples/halo.toml -o "$assets/halo.service" 2>/dev/null
