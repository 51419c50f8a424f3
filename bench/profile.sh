#!/usr/bin/env bash
# Where a new connection's time goes, halo against haproxy 2.6, on loopback only: each proxy in
# turn in front of nginx, wrk opening a new connection per request ("Connection: close", 2
# threads, 32 connections, DURATION seconds) while `perf record -e cpu-clock -g` samples the
# proxy alone. Prints, per proxy, its CPU time per 10 000 connections, the share of its samples
# in the kernel, in its own code and in libc, and its top symbols (self time). halo runs
# with `forwarding = "user"` (connection-per-request traffic never joins the kernel path).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DURATION="${DURATION:-3}"
needs_root profile.sh "installs wrk, perf"
scripts/setup.sh >/dev/null 2>&1
install_missing wrk wrk
install_missing perf linux-perf
release_build -p halo
HALO=$PWD/target/release/halo
bench_work ""

nginx_start 28081

{
  printf '[balancer]\nforwarding = "user"\n'
  halo_log_toml
  halo_frontend_toml web 127.0.0.1:18081
  halo_backend_toml web "" nginx=127.0.0.1:28081
} > "$WORK/halo.toml"
cat > "$WORK/haproxy.cfg" <<CFG
global
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend web
    bind 127.0.0.1:18081
    default_backend web
backend web
    server nginx 127.0.0.1:28081 check
CFG

for proxy in halo haproxy; do
  case $proxy in
    halo) "$HALO" run -c "$WORK/halo.toml" --pid-file "$WORK/halo.pid" 2>>"$WORK/halo.log" & PID=$! ;;
    haproxy) haproxy -db -f "$WORK/haproxy.cfg" >>"$WORK/haproxy.log" 2>&1 & PID=$! ;;
  esac
  track "$PID"
  for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:18081/ && break; sleep 0.1; done
  perf record -q -e cpu-clock -g -p "$PID" -o "$WORK/$proxy.data" -- sleep "$((DURATION + 1))" 2>/dev/null &
  PERF=$!
  sleep 0.5
  before=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
  out=$(wrk -t2 -c32 -d"${DURATION}s" -H "Connection: close" "http://127.0.0.1:18081/")
  after=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
  wait "$PERF" || true
  requests=$(echo "$out" | awk '/requests in/ { print $1 }')
  echo "## $proxy: $(echo "$out" | awk '/Requests\/sec/ { printf "%.0f", $2 }') connections/s, $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" 'BEGIN { printf "%.3f", t / hz * 10000 / n }') CPU s per 10 000"
  perf report -i "$WORK/$proxy.data" --no-children --sort dso --stdio 2>/dev/null | awk '/^ +[0-9]/ { printf "  %s %s\n", $1, $2 }' | awk 'NR <= 6'
  echo "  top symbols (self):"
  perf report -i "$WORK/$proxy.data" --no-children --sort sym --stdio -g none 2>/dev/null | awk '/^ +[0-9]/ { $1 = $1; print "   ", $0 }' | awk 'NR <= 25'
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
done
