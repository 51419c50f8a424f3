#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), one after the other, starting from the
# checked-in seeds. Not part of CI. Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(config_load import_haproxy import_keepalived vrrp_decode)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "== $target for ${seconds}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 2>&1 | tail -n 12
done
