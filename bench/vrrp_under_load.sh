#!/usr/bin/env bash
# Whether the data path's load moves the VIP: VRRP adverts of a master whose balancer is
# saturated, halo against keepalived 2.2.7 + haproxy in one run (root). For DURATION seconds
# (default 60) a client pushes iperf3 -P 8 and a wrk connection flood (a new connection per
# request) through the master's frontends to a server; tshark on the bridge records every VRRP
# packet. Counted: state changes of either router, adverts from the backup, the largest gap
# between the master's adverts and the gaps over 1.5 intervals, and the load that went through.
# With BASELINE=/path/to/halo an older build (halo-guard beside it) is measured the same way.
#
# LAN in network namespaces: routers b1 (priority 200, master) and b2 (100) at 100 ms adverts
# (VRRPv3), a server s (iperf3 -s on :5201, nginx on :8080), a client c. Each load is bounded
# by its own duration and killed by PID at exit; nothing leaves the namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TRIALS="${TRIALS:-3}"
DURATION="${DURATION:-60}"
needs_root vrrp_under_load.sh "installs iperf3, wrk"
for tool in iperf3 wrk; do
  command -v "$tool" >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null; apt-get install -y -q iperf3 wrk >/dev/null; }
done
for tool in nginx tshark haproxy keepalived; do
  command -v "$tool" >/dev/null || { echo "vrrp_under_load.sh: $tool not installed (scripts/setup.sh installs it)" >&2; exit 2; }
done
release_build -p halo
HALO=$PWD/target/release/halo
bench_work "hv$$"

make_lan b1 b2 s c
for h in b1 b2 c; do
  # A connection per request for a minute: local ports come back from TIME_WAIT.
  ns "$h" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000"
done
cat > "$WORK/nginx.conf" <<NGINX
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  server { listen 8080 reuseport backlog=4096; location / { return 200 "ok\n"; } }
}
NGINX
ip netns exec "$P-s" nginx -p "$WORK" -c "$WORK/nginx.conf" &
track $!
ip netns exec "$P-s" iperf3 -s -p 5201 >/dev/null 2>&1 &
track $!

halo_conf() { # priority
  printf '[log]\nlevel = "info"\n'
  halo_vrrp_toml "$1" 'advert_interval = "100ms"'
  halo_frontend_toml web 0.0.0.0:80
  halo_backend_toml web 'interval = "500ms"' s1=192.0.2.13:8080
  halo_frontend_toml iperf 0.0.0.0:5201
  # iperf3's server takes any connection for a test of its own: no probe there.
  printf '[[backend]]\nname = "iperf"\n[backend.health]\nkind = "none"\n[[backend.server]]\nname = "s1"\naddress = "192.0.2.13:5201"\n'
}

haproxy_cfg() {
  printf 'global\n    maxconn 9000\ndefaults\n    mode tcp\n    maxconn 9000\n    timeout connect 1s\n    timeout client 1m\n    timeout server 1m\n'
  printf 'frontend web\n    bind *:80\n    default_backend web\nbackend web\n    server s1 192.0.2.13:8080 check inter 500\n'
  printf 'frontend iperf\n    bind *:5201\n    default_backend iperf\nbackend iperf\n    server s1 192.0.2.13:5201\n'
}

# The routers of a variant started, b1 first; the pattern their logs show a state change with.
start_routers() { # variant -> pattern
  local h prio
  for h in b1:200 b2:100; do
    prio=${h##*:} h=${h%%:*}
    rm -f "$WORK/$h.log"
    case $1 in
      halo) halo_conf "$prio" > "$WORK/$h.toml"; start_halo "$h" ;;
      baseline) halo_conf "$prio" > "$WORK/$h.toml"; start_halo "$h" "$BASELINE" ;;
      classic)
        haproxy_cfg > "$WORK/$h.haproxy.cfg"
        start_haproxy "$h" >>"$WORK/$h.haproxy.log" 2>&1
        keepalived_conf "$prio" 3 0.1 > "$WORK/$h.conf"
        start_keepalived "$h" ;;
    esac
    sleep 0.3
  done
}

stop_routers() {
  local f
  for f in "$WORK"/b?.halo.pid "$WORK"/b?.haproxy.pid "$WORK"/b?.main.pid "$WORK"/b?.vrrp.pid; do
    if [ -f "$f" ]; then kill -TERM "$(cat "$f")" 2>/dev/null || true; fi
  done
  sleep 1
  for f in "$WORK"/b?.halo.pid "$WORK"/b?.haproxy.pid "$WORK"/b?.main.pid "$WORK"/b?.vrrp.pid "$WORK"/b?.check.pid; do
    if [ -f "$f" ]; then kill -KILL "$(cat "$f")" 2>/dev/null || true; fi
    rm -f "$f"
  done
  drop_vip b1 b2
}

changes() { # variant -> state changes in both routers' logs so far
  local pattern="state changed"
  [ "$1" = classic ] && pattern="Entering (MASTER|BACKUP|FAULT) STATE"
  cat "$WORK/b1.log" "$WORK/b2.log" | grep -c -E "$pattern" || true
}

# wait_bounded SECONDS PID...: waits for the PIDs, SIGKILLs what is left after SECONDS.
wait_bounded() {
  local end=$((SECONDS + $1)) pid
  shift
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt "$end" ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    untrack "$pid"
  done
}

# The load through the VIP for DURATION seconds; iperf3's and wrk's reports in $WORK.
load() {
  ip netns exec "$P-c" iperf3 -c 192.0.2.170 -p 5201 -P 8 -t "$DURATION" --connect-timeout 2000 > "$WORK/iperf.out" 2>&1 &
  local iperf=$!
  track $iperf
  ip netns exec "$P-c" wrk -t 2 -c 256 -d "${DURATION}s" --timeout 2s -H 'Connection: close' http://192.0.2.170/ > "$WORK/wrk.out" 2>&1 &
  local wrk=$!
  track $wrk
  wait_bounded $((DURATION + 20)) "$iperf" "$wrk"
}

# From the capture: "adverts-from-backup largest-gap-ms gaps-over-150ms" between FROM and TO.
advert_figures() { # from to
  awk -v from="$1" -v to="$2" -F'\t' '
    $1 < from - 0.2 || $1 > to { next }
    $2 != "192.0.2.11" { backup++; next }
    last { gap = $1 - last; if (gap > largest) largest = gap; if (gap > 0.15) over++ }
    { last = $1 }
    END { printf "%d %.0f %d\n", backup, largest * 1000, over }' "$WORK/adverts.tsv"
}

trial() { # variant -> "changes backup-adverts largest-gap-ms gaps-over-150ms Gbit/s requests/s"
  local variant=$1 before capture from to gbits rps
  start_routers "$variant"
  wait_for_vip b1 || { echo "b1 is not master ($variant)" >&2; stop_routers; return 1; }
  sleep 3   # checks up, the election settled
  ip netns exec "$P-sw" tshark -i br0 -f 'ip proto 112' -l -n -a "duration:$((DURATION + 40))" \
    -T fields -e frame.time_epoch -e ip.src -e vrrp.prio > "$WORK/adverts.tsv" 2>/dev/null &
  capture=$!
  track $capture
  sleep 2
  before=$(changes "$variant")
  from=$(date +%s.%N)
  load
  to=$(date +%s.%N)
  sleep 1
  kill -INT "$capture" 2>/dev/null || true
  wait_bounded 5 "$capture"
  gbits=$(awk '/SUM/ && /receiver/ { v = $(NF-2); u = $(NF-1) } END { if (u ~ /^M/) v /= 1000; printf "%.2f", v }' "$WORK/iperf.out")
  rps=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$WORK/wrk.out")
  echo "$(( $(changes "$variant") - before )) $(advert_figures "$from" "$to") ${gbits:-0} ${rps:-0}"
  stop_routers
  sleep 1
}

VARIANTS="${VARIANTS:-halo classic}"
[ -z "${BASELINE:-}" ] || VARIANTS="$VARIANTS baseline"
echo "vrrp_under_load.sh: $TRIALS trials of ${DURATION}s each for: $VARIANTS" >&2
declare -A OUT
for variant in $VARIANTS; do
  : > "$WORK/$variant.out"
  for t in $(seq "$TRIALS"); do
    o=$(trial "$variant")
    echo "$o" >> "$WORK/$variant.out"
    read -r c b g n gb r <<< "$o"
    echo "$variant trial $t: $c state changes, $b adverts from the backup, largest gap $g ms, $n gaps > 150 ms; iperf3 $gb Gbit/s, wrk $r requests/s" >&2
  done
  for k in 1 2 3 4 5 6; do OUT[$variant.$k]=$(awk -v k="$k" '{ print $k }' "$WORK/$variant.out" | median); done
done
name() { case $1 in halo) echo "halo (VRRP on its own thread)" ;; baseline) echo "halo, BASELINE build" ;; classic) echo "keepalived + haproxy" ;; esac; }
printf '| median of %s, %s s of iperf3 -P 8 + wrk flood through the master |' "$TRIALS" "$DURATION"
for v in $VARIANTS; do printf ' %s |' "$(name "$v")"; done
printf '\n|---|'
for _ in $VARIANTS; do printf -- '---|'; done
printf '\n'
row() { # label column
  printf '| %s |' "$1"
  for v in $VARIANTS; do printf ' %s |' "${OUT[$v.$2]}"; done
  printf '\n'
}
row "state changes (both routers)" 1
row "adverts from the backup" 2
row "largest gap between the master's adverts, ms" 3
row "gaps over 150 ms (1.5 intervals)" 4
row "iperf3 through the master, Gbit/s" 5
row "wrk through the master, requests/s" 6
