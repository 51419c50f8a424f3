#!/usr/bin/env bash
# Balancer data path, halo against haproxy 2.6 (with and without `option splice-auto`), in one
# run, on loopback only. Per trial and proxy:
#   throughput  - one iperf3 TCP stream through the proxy for 3 s (Gbit/s)
#   requests    - wrk, 2 threads, 32 connections, 3 s, against nginx behind the proxy (req/s,
#                 and p99 latency), new TCP connection per request ("Connection: close"), with
#                 the proxy's CPU time (user + sys from /proc) per 10 000 of them
#   kept-alive  - the same on kept-alive connections (small requests, no new connection)
# Each proxy also runs with its per-connection log on (halo `[log] connections = true` to a
# file, haproxy `option tcplog` to stdout, also a file): what the log costs.
# Prints a markdown table of medians over TRIALS (default 5). Installs iperf3 and wrk if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TRIALS="${TRIALS:-5}"
needs_root lb.sh "installs iperf3, wrk"
scripts/setup.sh >/dev/null 2>&1
for tool in iperf3 wrk; do
  command -v "$tool" >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null; apt-get install -y -q iperf3 wrk >/dev/null; }
done
release_build -p halo
HALO=$PWD/target/release/halo
bench_work ""

# Backends: iperf3 on :25201, nginx on :28080 (a tiny page).
iperf3 -s -p 25201 >/dev/null 2>&1 & track $!
mkdir -p "$WORK/www"
echo ok > "$WORK/www/index.html"
cat > "$WORK/nginx.conf" <<NGINX
pid $WORK/nginx.pid;
error_log stderr crit;
master_process off;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:28080; root $WORK/www; } }
NGINX
nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' & track $!

{
  halo_log_toml
  halo_frontend_toml iperf 127.0.0.1:15201
  halo_frontend_toml web 127.0.0.1:18080
  halo_backend_toml iperf "" iperf=127.0.0.1:25201
  halo_backend_toml web "" nginx=127.0.0.1:28080
} > "$WORK/halo.toml"

sed 's/^level = "warn"$/level = "info"\nconnections = true/' "$WORK/halo.toml" > "$WORK/halo-log.toml"

haproxy_cfg() { # splice: yes|no, log: yes|no
  cat <<CFG
global
    maxconn 4000
$( [ "${2:-no}" = yes ] && echo "    log stdout format raw local0" )
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
$( [ "$1" = yes ] && echo "    option splice-auto" )
$( [ "${2:-no}" = yes ] && printf '    log global\n    option tcplog\n' )
frontend iperf
    bind 127.0.0.1:15201
    default_backend iperf
frontend web
    bind 127.0.0.1:18080
    default_backend web
backend iperf
    server iperf 127.0.0.1:25201 check
backend web
    server nginx 127.0.0.1:28080 check
CFG
}
haproxy_cfg no > "$WORK/haproxy.cfg"
haproxy_cfg yes > "$WORK/haproxy-splice.cfg"
haproxy_cfg no yes > "$WORK/haproxy-log.cfg"

start_proxy() { # name -> PROXY_PID
  case $1 in
    halo) "$HALO" run -c "$WORK/halo.toml" --pid-file "$WORK/halo.pid" 2>>"$WORK/halo.log" & PROXY_PID=$! ;;
    halo-log) "$HALO" run -c "$WORK/halo-log.toml" --pid-file "$WORK/halo.pid" 2>"$WORK/halo-connections.log" & PROXY_PID=$! ;;
    haproxy-log) haproxy -db -f "$WORK/haproxy-log.cfg" >"$WORK/haproxy-connections.log" 2>&1 & PROXY_PID=$! ;;
    haproxy) haproxy -db -f "$WORK/haproxy.cfg" >>"$WORK/haproxy.log" 2>&1 & PROXY_PID=$! ;;
    haproxy-splice) haproxy -db -f "$WORK/haproxy-splice.cfg" >>"$WORK/haproxy.log" 2>&1 & PROXY_PID=$! ;;
  esac
  track "$PROXY_PID"
  for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:18080/ && return 0; sleep 0.1; done
  echo "lb.sh: $1 did not come up" >&2; tail -n 5 "$WORK"/*.log >&2; return 1
}

# cpu_ticks PID: user + sys clock ticks of a process so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

declare -A GBPS RPS P99 CPU KEPT
PROXIES="halo halo-log haproxy haproxy-log haproxy-splice"
for proxy in $PROXIES; do
  : > "$WORK/$proxy.gbps"; : > "$WORK/$proxy.rps"; : > "$WORK/$proxy.p99"; : > "$WORK/$proxy.cpu"; : > "$WORK/$proxy.kept"
done
HZ=$(getconf CLK_TCK)
for t in $(seq "$TRIALS"); do
  for proxy in $PROXIES; do
    start_proxy "$proxy"
    gbps=$(iperf3 -c 127.0.0.1 -p 15201 -t 3 -J | awk -F'[:,]' '/"sum_received"/ { f = 1 } f && /"bits_per_second"/ { printf "%.2f\n", $2 / 1e9; exit }')
    before=$(cpu_ticks "$PROXY_PID")
    out=$(wrk -t2 -c32 -d3s --latency -H "Connection: close" http://127.0.0.1:18080/)
    after=$(cpu_ticks "$PROXY_PID")
    rps=$(echo "$out" | awk '/Requests\/sec/ { printf "%.0f\n", $2 }')
    total=$(echo "$out" | awk '/requests in/ { print $1 }')
    cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$total" 'BEGIN { printf "%.2f\n", t / hz * 10000 / n }')
    kept=$(wrk -t2 -c32 -d3s http://127.0.0.1:18080/ | awk '/Requests\/sec/ { printf "%.0f\n", $2 }')
    p99=$(echo "$out" | awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 }; printf "%.2f\n", v }')
    echo "$gbps" >> "$WORK/$proxy.gbps"; echo "$rps" >> "$WORK/$proxy.rps"; echo "$p99" >> "$WORK/$proxy.p99"
    echo "$cpu" >> "$WORK/$proxy.cpu"; echo "$kept" >> "$WORK/$proxy.kept"
    echo "trial $t $proxy: ${gbps} Gbit/s, ${rps} req/s, p99 ${p99} ms, ${cpu} CPU s per 10k connections, ${kept} kept-alive req/s" >&2
    kill -TERM "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true
  done
done
for proxy in $PROXIES; do
  GBPS[$proxy]=$(median < "$WORK/$proxy.gbps"); RPS[$proxy]=$(median < "$WORK/$proxy.rps"); P99[$proxy]=$(median < "$WORK/$proxy.p99")
  CPU[$proxy]=$(median < "$WORK/$proxy.cpu"); KEPT[$proxy]=$(median < "$WORK/$proxy.kept")
done
echo "| median of $TRIALS | halo (splice) | halo, connection log | haproxy 2.6 | haproxy 2.6 tcplog | haproxy 2.6 splice-auto |"
echo "|---|---|---|---|---|---|"
row() { echo "| $1 | $2 | $3 | $4 | $5 | $6 |"; }
row "iperf3, one stream, Gbit/s" "${GBPS[halo]}" "${GBPS[halo-log]}" "${GBPS[haproxy]}" "${GBPS[haproxy-log]}" "${GBPS[haproxy-splice]}"
row "wrk, new connection per request, req/s" "${RPS[halo]}" "${RPS[halo-log]}" "${RPS[haproxy]}" "${RPS[haproxy-log]}" "${RPS[haproxy-splice]}"
row "wrk p99 latency, ms" "${P99[halo]}" "${P99[halo-log]}" "${P99[haproxy]}" "${P99[haproxy-log]}" "${P99[haproxy-splice]}"
row "proxy CPU time per 10 000 new connections, s" "${CPU[halo]}" "${CPU[halo-log]}" "${CPU[haproxy]}" "${CPU[haproxy-log]}" "${CPU[haproxy-splice]}"
row "wrk, kept-alive connections, req/s" "${KEPT[halo]}" "${KEPT[halo-log]}" "${KEPT[haproxy]}" "${KEPT[haproxy-log]}" "${KEPT[haproxy-splice]}"
echo "connection log lines written in the last halo-log trial: $(grep -c '"connection"\|connection client=' "$WORK/halo-connections.log" || true)" >&2
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
echo "halo / haproxy 2.6 (no logs): bulk $(ratio "${GBPS[halo]}" "${GBPS[haproxy]}"), new connections $(ratio "${RPS[halo]}" "${RPS[haproxy]}"), p99 $(ratio "${P99[halo]}" "${P99[haproxy]}"), CPU per new connection $(ratio "${CPU[halo]}" "${CPU[haproxy]}"), kept-alive $(ratio "${KEPT[halo]}" "${KEPT[haproxy]}")"
