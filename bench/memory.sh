#!/usr/bin/env bash
# Idle memory, halo + its guard against haproxy 2.6 + keepalived 2.2.7, in one run (root).
# The same job on both sides, on balancer b1 of a LAN in network namespaces: one VRRP v3 instance
# (master, 1 s adverts) and one TCP frontend on :8443 with one checked server (m1, a probe
# listener). Each side runs alone, idle for IDLE seconds after its start; then the RSS and PSS of
# every process of the side are read from /proc/PID/smaps_rollup. halo is the package's build
# (release, without the lab); HALO=path measures another binary. Medians of TRIALS.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TRIALS="${TRIALS:-3}"
IDLE="${IDLE:-3}"
needs_root memory.sh
release_build -p halo-probe
if [ -z "${HALO:-}" ]; then
  release_build -p halo --no-default-features
  HALO=$PWD/target/release/halo
fi
PROBE=$PWD/target/release/probe
bench_work "hm$$"

make_lan b1 m1
ip netns exec "$P-m1" "$PROBE" listen 0.0.0.0:6443 &
track $!

{
  halo_log_toml
  halo_vrrp_toml 200
  halo_frontend_toml api 0.0.0.0:8443
  halo_backend_toml api "" m1=192.0.2.12:6443
} > "$WORK/halo.toml"
haproxy_api_cfg 2000 "" 192.0.2.12:6443 > "$WORK/haproxy.cfg"
keepalived_conf 200 3 1 > "$WORK/keepalived.conf"

# kib PID FIELD: Rss or Pss of PID in KiB.
kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/smaps_rollup"; }

# measure PID...: "<rss> <pss>" summed over the PIDs.
measure() {
  local rss=0 pss=0 pid
  for pid in "$@"; do rss=$((rss + $(kib "$pid" Rss))); pss=$((pss + $(kib "$pid" Pss))); done
  echo "$rss $pss"
}

trial_halo() {
  local main guard
  ip netns exec "$P-b1" "$HALO" run -c "$WORK/halo.toml" --pid-file "$WORK/halo.pid" 2>>"$WORK/halo.log" &
  main=$!; track "$main"
  sleep "$IDLE"
  guard=$(pgrep -P "$main")
  echo "$(measure "$main") $(measure "$guard")"
  kill -TERM "$main"; wait "$main" || true
  sleep 0.5
}

trial_classic() {
  local haproxy keepalived child
  ip netns exec "$P-b1" haproxy -db -f "$WORK/haproxy.cfg" >/dev/null 2>&1 &
  haproxy=$!; track "$haproxy"
  ip netns exec "$P-b1" keepalived -n -l -D -P -f "$WORK/keepalived.conf" -p "$WORK/ka.pid" -r "$WORK/ka.vrrp.pid" >>"$WORK/ka.log" 2>&1 &
  keepalived=$!; track "$keepalived"
  sleep "$IDLE"
  child=$(cat "$WORK/ka.vrrp.pid")
  echo "$(measure "$haproxy") $(measure "$keepalived" "$child")"
  kill -TERM "$keepalived" "$haproxy"; wait "$keepalived" "$haproxy" || true
  drop_vip b1
  sleep 0.5
}

: > "$WORK/halo.out"; : > "$WORK/classic.out"
for t in $(seq "$TRIALS"); do
  trial_halo >> "$WORK/halo.out"
  trial_classic >> "$WORK/classic.out"
  echo "trial $t: halo run + guard (RSS PSS, KiB): $(tail -1 "$WORK/halo.out"); haproxy, keepalived: $(tail -1 "$WORK/classic.out")" >&2
done
col() { awk -v c="$2" '{ print $c }' "$1" | median; }
h_rss=$(col "$WORK/halo.out" 1) h_pss=$(col "$WORK/halo.out" 2) g_rss=$(col "$WORK/halo.out" 3) g_pss=$(col "$WORK/halo.out" 4)
a_rss=$(col "$WORK/classic.out" 1) a_pss=$(col "$WORK/classic.out" 2) k_rss=$(col "$WORK/classic.out" 3) k_pss=$(col "$WORK/classic.out" 4)
echo "binary: $HALO ($(stat -c %s "$HALO") bytes)"
echo "| idle, median of $TRIALS, KiB | halo run | halo guard | together | haproxy | keepalived (parent + VRRP child) | together |"
echo "|---|---|---|---|---|---|---|"
echo "| RSS | $h_rss | $g_rss | $((h_rss + g_rss)) | $a_rss | $k_rss | $((a_rss + k_rss)) |"
echo "| PSS | $h_pss | $g_pss | $((h_pss + g_pss)) | $a_pss | $k_pss | $((a_pss + k_pss)) |"
