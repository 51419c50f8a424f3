#!/usr/bin/env bash
# The migration path (no root needed; the main job is scripts/lab.sh): take the classic stack of the guide
# (haproxy.cfg + keepalived.conf + check_apiserver.sh), import it into one halo.toml, validate it
# with the daemon's own loader, and render the corrected classic artefacts next to it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/demo
mkdir -p "$out"
cargo build --quiet --locked -p halo
halo=target/debug/halo

echo "== halo import (the guide's files in testdata/seed/)"
"$halo" import --haproxy testdata/seed/haproxy.cfg --keepalived testdata/seed/keepalived.conf \
  --check-script testdata/seed/check_apiserver.sh -o "$out/halo.toml"
echo
echo "== halo check -c $out/halo.toml"
"$halo" check -c "$out/halo.toml"
echo
echo "== halo render (corrected classic artefacts in $out/)"
for artefact in haproxy keepalived check-script sysctl; do
  "$halo" render "$artefact" -c "$out/halo.toml" -o "$out/$artefact.out"
  echo "   $out/$artefact.out"
done
if command -v haproxy >/dev/null; then
  echo "== haproxy -c on the rendered haproxy.cfg"
  haproxy -c -f "$out/haproxy.out"
fi
