#!/usr/bin/env bash
# VRRP failover, halo against keepalived 2.2.7, in one run (root).
#
# A LAN in network namespaces: a switch (bridge), balancers b1 (priority 200) and b2 (100), and a
# client c that connects to VIP:8443 every 10 ms (probe). Each balancer runs a TCP listener on
# :8443. Faults hit b1 at a random phase of the advert interval:
#   crash  - b1's link cut and its VRRP daemon SIGKILLed (host crash)
#   stop   - SIGTERM of b1's daemon (clean stop)
#   kill   - SIGKILL of b1's VRRP daemon only (every keepalived process): how long b1 keeps the VIP
# Outage = first failed connect after the fault .. first success after the last failure.
# Prints a markdown table of medians over TRIALS (default 5). Nothing leaves the namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TRIALS="${TRIALS:-5}"
needs_root failover.sh "network namespaces"
command -v keepalived >/dev/null || { echo "failover.sh: run scripts/setup.sh first" >&2; exit 2; }
release_build -p halo -p halo-probe
HALO=$PWD/target/release/halo
PROBE=$PWD/target/release/probe
bench_work "hb$$"

setup_lan() {
  make_lan b1 b2 c
  for h in b1 b2; do
    ip netns exec "$P-$h" "$PROBE" listen 0.0.0.0:8443 &
    track $!
  done
}

# start_daemon IMPL HOST PRIORITY -> sets DAEMON_PID
start_daemon() {
  local impl=$1 host=$2 prio=$3
  case $impl in
    halo-v3-100ms)
      { halo_vrrp_toml "$prio" 'version = 3' 'advert_interval = "100ms"'; halo_log_toml; } > "$WORK/$host.toml"
      start_halo "$host"
      DAEMON_PID=$! ;;
    keepalived-v3-100ms|keepalived-v2-1s)
      local version=3 interval=0.1
      [ "$impl" = keepalived-v2-1s ] && version=2 interval=1
      keepalived_conf "$prio" "$version" "$interval" > "$WORK/$host.conf"
      start_keepalived "$host"
      DAEMON_PID=$! ;;
  esac
}

# crash_daemon HOST PID: SIGKILL of every VRRP process of the host at once. keepalived's VRRP
# child cleans up when only its parent dies, so it is killed first (a real crash).
crash_daemon() {
  local child=""
  [ -f "$WORK/$1.vrrp.pid" ] && child=$(cat "$WORK/$1.vrrp.pid")
  kill -KILL $child "$2" 2>/dev/null || true
  rm -f "$WORK/$1".*.pid
}

interval_ms() { case $1 in *1s) echo 1000 ;; *) echo 100 ;; esac; }

trial() { # impl scenario -> prints outage_ms [vip_held_ms]
  local impl=$1 scenario=$2 every client_pid fault_us t0 held
  every=$(interval_ms "$impl")
  start_daemon "$impl" b1 200; local b1=$DAEMON_PID
  sleep 0.3
  start_daemon "$impl" b2 100; local b2=$DAEMON_PID
  wait_until 15 holds b1 || { echo "b1 never became master ($impl)" >&2; return 1; }
  sleep 1
  local duration=$(( every * 6 + 3000 ))
  t0=$(date +%s%N)
  ip netns exec "$P-c" "$PROBE" connect 192.0.2.170:8443 10 "$duration" 20 > "$WORK/client.log" &
  client_pid=$!
  track "$client_pid"
  # A random phase of the advert interval after one second of steady state.
  sleep_random 1 "$every"
  fault_us=$(( ($(date +%s%N) - t0) / 1000 ))
  held=""
  case $scenario in
    crash) ip -n "$P-sw" link set p-b1 down; crash_daemon b1 "$b1" ;;
    stop) kill -TERM "$b1" ;;
    kill)
      crash_daemon b1 "$b1"
      local k0; k0=$(date +%s%N); held=">10000"
      for _ in $(seq 1000); do holds b1 || { held=$(( ($(date +%s%N) - k0) / 1000000 )); break; }; sleep 0.01; done ;;
  esac
  wait "$client_pid" || true
  echo "$(outage_ms "$WORK/client.log" "$fault_us") $held"
  crash_daemon b2 "$b2"
  kill -TERM "$b1" 2>/dev/null || true
  wait "$b1" "$b2" 2>/dev/null || true
  ip -n "$P-sw" link set p-b1 up
  drop_vip b1 b2
  sleep 0.3
}

setup_lan
IMPLS="halo-v3-100ms keepalived-v3-100ms keepalived-v2-1s"
SCENARIOS="crash stop kill"
declare -A OUT HELD
for impl in $IMPLS; do
  for scenario in $SCENARIOS; do
    outs=() helds=()
    for t in $(seq "$TRIALS"); do
      read -r o h < <(trial "$impl" "$scenario")
      outs+=("$o"); helds+=("${h:-}")
      echo "$impl $scenario trial $t: outage ${o} ms${h:+, VIP held ${h} ms}" >&2
    done
    OUT[$impl/$scenario]=$(printf '%s\n' "${outs[@]}" | median)
    [ "$scenario" = kill ] && HELD[$impl]=$(printf '%s\n' "${helds[@]}" | sed 's/>//' | median)
  done
done

echo "| scenario (median of $TRIALS) | halo v3 100 ms | keepalived v3 100 ms | keepalived v2 1 s (seed) |"
echo "|---|---|---|---|"
for scenario in $SCENARIOS; do
  echo "| $scenario: client outage, ms | ${OUT[halo-v3-100ms/$scenario]} | ${OUT[keepalived-v3-100ms/$scenario]} | ${OUT[keepalived-v2-1s/$scenario]} |"
done
echo "| kill: VIP still on the killed master, ms | ${HELD[halo-v3-100ms]} | ${HELD[keepalived-v3-100ms]}+ | ${HELD[keepalived-v2-1s]}+ |"
