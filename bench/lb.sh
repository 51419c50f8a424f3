#!/usr/bin/env bash
# Balancer data path, halo against haproxy 2.6 (2 threads, with and without `option
# splice-auto`) and against the direct path (client to server, no proxy: the physical limit),
# in one run, on loopback only. halo runs in both forwarding modes: kernel (`auto` as root: the
# BPF sk_skb path) and user (`forwarding = "user"`: splice). Per trial and configuration:
#   throughput  - one iperf3 TCP stream through the proxy for 3 s (Gbit/s)
#   requests    - wrk, 2 threads, 32 connections, 3 s, against nginx behind the proxy (req/s,
#                 and p99 latency), new TCP connection per request ("Connection: close"), with
#                 the proxy's CPU time (user + sys from /proc) per 10 000 of them
#   kept-alive  - the same on kept-alive connections (small requests, no new connection): req/s,
#                 p99, the proxy's CPU per 10 000 requests, and the whole machine's busy CPU
#                 per 10 000 requests (kernel forwarding runs in softirq context, which /proc
#                 charges to whatever process was running: only the machine's total is fair)
# halo and haproxy also run with their per-connection log on (halo `[log] connections = true`
# to a file, haproxy `option tcplog` to stdout, also a file): what the log costs.
# Prints a markdown table of medians over TRIALS (default 5). Installs iperf3 and wrk if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TRIALS="${TRIALS:-5}"
needs_root lb.sh "installs iperf3, wrk"
scripts/setup.sh >/dev/null 2>&1
install_missing iperf3 iperf3 wrk
install_missing wrk iperf3 wrk
release_build -p halo
HALO=$PWD/target/release/halo
bench_work ""

# Backends: iperf3 on :25201, nginx on :28080 (a tiny page).
iperf3 -s -p 25201 >/dev/null 2>&1 & track $!
# Connections kept for as long as the clients keep them (an API server does): nginx would close
# a kept-alive connection after 1000 requests, and no connection would live long enough to show
# the kernel path (kernel_after).
nginx_start 28080 "keepalive_requests 100000000; keepalive_timeout 300s;"

{
  halo_log_toml
  halo_frontend_toml iperf 127.0.0.1:15201
  halo_frontend_toml web 127.0.0.1:18080
  halo_backend_toml iperf "" iperf=127.0.0.1:25201
  halo_backend_toml web "" nginx=127.0.0.1:28080
} > "$WORK/halo-base.toml"
# halo (kernel): `forwarding = "auto"` (the default, said); halo-user: `forwarding = "user"`.
printf '[balancer]\nforwarding = "auto"\n' | cat - "$WORK/halo-base.toml" > "$WORK/halo.toml"

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
    halo-user) "$HALO" run -c "$WORK/halo-user.toml" --pid-file "$WORK/halo.pid" 2>>"$WORK/halo-user.log" & PROXY_PID=$! ;;
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

printf '[balancer]\nforwarding = "user"\n' | cat - "$WORK/halo-base.toml" > "$WORK/halo-user.toml"

# cpu_busy: busy clock ticks of the whole machine so far (all but idle and iowait).
cpu_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

declare -A GBPS RPS P99 CPU KEPT KP99 KCPU KSYS
PROXIES="halo halo-user halo-log haproxy haproxy-log haproxy-splice direct"
METRICS="gbps rps p99 cpu kept kp99 kcpu ksys"
for proxy in $PROXIES; do for m in $METRICS; do : > "$WORK/$proxy.$m"; done; done
HZ=$(getconf CLK_TCK)
ms() { awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 }; printf "%.3f\n", v }'; }
per10k() { awk -v t="$1" -v hz="$HZ" -v n="$2" 'BEGIN { printf "%.3f\n", t / hz * 10000 / n }'; }
for t in $(seq "$TRIALS"); do
  for proxy in $PROXIES; do
    if [ "$proxy" = direct ]; then
      PROXY_PID=""; IPERF_PORT=25201; WEB_PORT=28080
    else
      start_proxy "$proxy"; IPERF_PORT=15201; WEB_PORT=18080
    fi
    proxy_ticks() { if [ -n "$PROXY_PID" ]; then cpu_ticks "$PROXY_PID"; else echo 0; fi; }
    gbps=$(iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -t 3 -J | awk -F'[:,]' '/"sum_received"/ { f = 1 } f && /"bits_per_second"/ { printf "%.2f\n", $2 / 1e9; exit }')
    before=$(proxy_ticks)
    out=$(wrk -t2 -c32 -d3s --latency -H "Connection: close" "http://127.0.0.1:$WEB_PORT/")
    after=$(proxy_ticks)
    rps=$(echo "$out" | awk '/Requests\/sec/ { printf "%.0f\n", $2 }')
    cpu=$(per10k $((after - before)) "$(echo "$out" | awk '/requests in/ { print $1 }')")
    p99=$(echo "$out" | ms)
    before=$(proxy_ticks); busy_before=$(cpu_busy)
    out=$(wrk -t2 -c32 -d3s --latency "http://127.0.0.1:$WEB_PORT/")
    after=$(proxy_ticks); busy_after=$(cpu_busy)
    kept=$(echo "$out" | awk '/Requests\/sec/ { printf "%.0f\n", $2 }')
    requests=$(echo "$out" | awk '/requests in/ { print $1 }')
    kcpu=$(per10k $((after - before)) "$requests"); ksys=$(per10k $((busy_after - busy_before)) "$requests")
    kp99=$(echo "$out" | ms)
    for m in $METRICS; do echo "${!m}" >> "$WORK/$proxy.$m"; done
    echo "trial $t $proxy: ${gbps} Gbit/s, ${rps} req/s (p99 ${p99} ms, ${cpu} CPU s per 10k), kept-alive ${kept} req/s (p99 ${kp99} ms, ${kcpu} proxy / ${ksys} machine CPU s per 10k)" >&2
    if [ -n "$PROXY_PID" ]; then kill -TERM "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true; fi
  done
done
for proxy in $PROXIES; do
  GBPS[$proxy]=$(median < "$WORK/$proxy.gbps"); RPS[$proxy]=$(median < "$WORK/$proxy.rps"); P99[$proxy]=$(median < "$WORK/$proxy.p99")
  CPU[$proxy]=$(median < "$WORK/$proxy.cpu"); KEPT[$proxy]=$(median < "$WORK/$proxy.kept"); KP99[$proxy]=$(median < "$WORK/$proxy.kp99")
  KCPU[$proxy]=$(median < "$WORK/$proxy.kcpu"); KSYS[$proxy]=$(median < "$WORK/$proxy.ksys")
done
if grep -q "relayed in user space" "$WORK/halo.log"; then echo "lb.sh: halo did not forward in the kernel: $(grep -m1 "relayed in user space" "$WORK/halo.log")" >&2; fi
echo "| median of $TRIALS | halo (kernel) | halo (user, splice) | halo, connection log | haproxy 2.6 | haproxy 2.6 tcplog | haproxy 2.6 splice-auto | direct (no proxy) |"
echo "|---|---|---|---|---|---|---|---|"
row() { local name=$1; shift; local -n v=$1; echo "| $name | ${v[halo]} | ${v[halo-user]} | ${v[halo-log]} | ${v[haproxy]} | ${v[haproxy-log]} | ${v[haproxy-splice]} | ${v[direct]} |"; }
row "iperf3, one stream, Gbit/s" GBPS
row "wrk, new connection per request, req/s" RPS
row "wrk p99 latency, new connection, ms" P99
row "proxy CPU time per 10 000 new connections, s" CPU
row "wrk, kept-alive connections, req/s" KEPT
row "wrk p99 latency, kept-alive, ms" KP99
row "proxy CPU time per 10 000 kept-alive requests, s" KCPU
row "machine CPU time per 10 000 kept-alive requests, s" KSYS
echo "connection log lines written in the last halo-log trial: $(grep -c '"connection"\|connection client=' "$WORK/halo-connections.log" || true)" >&2
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
for h in halo halo-user; do
  echo "$h / haproxy 2.6 (no logs): bulk $(ratio "${GBPS[$h]}" "${GBPS[haproxy]}"), new connections $(ratio "${RPS[$h]}" "${RPS[haproxy]}"), p99 new $(ratio "${P99[$h]}" "${P99[haproxy]}"), CPU per new connection $(ratio "${CPU[$h]}" "${CPU[haproxy]}"), kept-alive $(ratio "${KEPT[$h]}" "${KEPT[haproxy]}"), p99 kept-alive $(ratio "${KP99[$h]}" "${KP99[haproxy]}"), proxy CPU per kept-alive request $(ratio "${KCPU[$h]}" "${KCPU[haproxy]}"), machine CPU per kept-alive request $(ratio "${KSYS[$h]}" "${KSYS[haproxy]}")"
  echo "$h / direct: bulk $(ratio "${GBPS[$h]}" "${GBPS[direct]}"), new connections $(ratio "${RPS[$h]}" "${RPS[direct]}"), kept-alive $(ratio "${KEPT[$h]}" "${KEPT[direct]}"), p99 kept-alive $(ratio "${KP99[$h]}" "${KP99[direct]}")"
done
