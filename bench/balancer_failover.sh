#!/usr/bin/env bash
# "The balancer on the master stops serving but VRRP lives", halo against haproxy + keepalived
# 2.2.7 + the guide's check script, in one run (root). Not the same fault on both sides, by
# necessity: halo's balancer and VRRP are one process, so halo's master loses every backend
# (a blackhole route to the API server), while the classic master's haproxy is SIGKILLed. Both
# leave a master whose VIP no longer leads anywhere; what is measured is how long clients fail.
#
# LAN in network namespaces: balancers b1 (priority 200) and b2 (100), an API server stand-in m1
# (probe listening on :6443), a client c connecting to VIP:8443 every 10 ms. Medians of TRIALS.
# halo runs twice: its balancer tracker with a weight (the master's priority drops and a backup
# takes over after its Master_Down_Interval) and without one (FAULT: the master sends priority 0
# and a backup takes over after its skew time).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TRIALS="${TRIALS:-5}"
needs_root balancer_failover.sh
release_build -p halo -p halo-probe
HALO=$PWD/target/release/halo
PROBE=$PWD/target/release/probe
bench_work "hl$$"

make_lan b1 b2 m1 c
ip netns exec "$P-m1" "$PROBE" listen 0.0.0.0:6443 &
track $!

halo_conf() { # priority, tracker weight line ("" for FAULT mode)
  halo_log_toml
  halo_vrrp_toml "$1" 'advert_interval = "100ms"'
  # The VRRP instance's track list, then the tracker it names.
  cat <<TOML
track = ["local-balancer"]
[[tracker]]
name = "local-balancer"
kind = "balancer"
frontend = "api"
$2
TOML
  halo_frontend_toml api 0.0.0.0:8443
  halo_backend_toml api "$QUICK_HEALTH" m1=192.0.2.13:6443
}

# keepalived + haproxy per host; the check script is the guide's shape (exit 0 while the local
# balancer answers), with the given interval and fall.
classic_start() { # host priority interval fall
  local h=$1
  haproxy_api_cfg 2000 "inter 200 fall 2" 192.0.2.13:6443 > "$WORK/$h.haproxy.cfg"
  printf '#!/bin/sh\nexec timeout 2 bash -c "echo > /dev/tcp/127.0.0.1/8443"\n' > "$WORK/check.sh"
  chmod 755 "$WORK/check.sh"
  {
    printf 'vrrp_script chk {\n  script "%s"\n  interval %s\n  weight -150\n  fall %s\n  rise 2\n}\n' "$WORK/check.sh" "$3" "$4"
    keepalived_conf "$2" 3 0.1 chk
  } > "$WORK/$h.conf"
  start_haproxy "$h" >/dev/null 2>&1
  start_keepalived "$h"
}

classic_stop() {
  for h in b1 b2; do
    for f in "$WORK/$h".*.pid; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true; done
    rm -f "$WORK/$h".*.pid
  done
}

trial() { # variant -> outage ms
  local variant=$1 duration settle t0 fault_us client
  case $variant in
    halo|halo-fault)
      local weight="weight = -150"
      [ "$variant" = halo-fault ] && weight=""
      halo_conf 200 "$weight" > "$WORK/b1.toml"; halo_conf 100 "$weight" > "$WORK/b2.toml"
      start_halo b1
      sleep 0.3
      start_halo b2
      duration=6000 settle=2 ;;
    classic-seed) classic_start b1 200 3 10; sleep 0.3; classic_start b2 100 3 10; duration=45000 settle=12 ;;
    classic-tuned) classic_start b1 200 1 1; sleep 0.3; classic_start b2 100 1 1; duration=8000 settle=5 ;;
  esac
  # Steady state: the checks have risen (the guide's rise 2 x 3 s) and b1 holds the VIP.
  sleep "$settle"
  wait_for_vip b1 || { echo "b1 is not master before the fault ($variant)" >&2; return 1; }
  t0=$(date +%s%N)
  ip netns exec "$P-c" "$PROBE" connect 192.0.2.170:8443 10 "$duration" 20 > "$WORK/client.log" &
  client=$!
  track "$client"
  sleep_random 1 1000
  fault_us=$(( ($(date +%s%N) - t0) / 1000 ))
  case $variant in
    halo|halo-fault) ip -n "$P-b1" route add blackhole 192.0.2.13/32 ;;
    *) kill -KILL "$(cat "$WORK/b1.haproxy.pid")" ;;
  esac
  wait "$client" || true
  outage_ms "$WORK/client.log" "$fault_us"
  case $variant in
    halo|halo-fault)
      for f in "$WORK"/b?.halo.pid; do [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true; done
      sleep 0.5
      ip -n "$P-b1" route del blackhole 192.0.2.13/32 ;;
    *) classic_stop ;;
  esac
  drop_vip b1 b2
  sleep 0.5
}

declare -A OUT=([halo]=- [halo-fault]=- [classic-tuned]=- [classic-seed]=-)
for variant in ${VARIANTS:-halo halo-fault classic-tuned classic-seed}; do
  : > "$WORK/$variant.out"
  for t in $(seq "$TRIALS"); do
    o=$(trial "$variant")
    echo "$o" >> "$WORK/$variant.out"
    echo "$variant trial $t: outage $o ms" >&2
  done
  OUT[$variant]=$(median < "$WORK/$variant.out")
done
echo "| median of $TRIALS: client outage, ms | halo, tracker weight -150 | halo, tracker without weight (FAULT) | haproxy killed, script 1 s x 1 | haproxy killed, the guide's script 3 s x 10 |"
echo "|---|---|---|---|---|"
echo "| VRRP v3 100 ms adverts on all | ${OUT[halo]} | ${OUT[halo-fault]} | ${OUT[classic-tuned]} | ${OUT[classic-seed]} |"
