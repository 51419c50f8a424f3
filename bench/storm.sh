#!/usr/bin/env bash
# The reconnect storm after a failover, halo against haproxy 2.6 + keepalived 2.2.7, in one run
# (root). After the master host crashes, every client of the cluster reconnects through the new
# master within about a second; what decides how fast they are all back is the new master's
# balancer: listen backlog, accept batching, the connection cap's queue, the connects to the
# API servers.
#
# LAN in network namespaces: balancers b1 (priority 200) and b2 (100), VRRP v3 at 100 ms, an
# API-server stand-in m1 (probe echo-serve on :6443, listen backlog 4096), a client c holding
# CONNECTIONS (default 5000) long-lived connections through VIP:8443, each sending a heartbeat
# every second and reconnecting the moment one goes unanswered within a second (retry after
# 100 ms; connect and greeting timeout 10 s, an API client's TLS handshake timeout). Once all are up, b1 crashes (its switch port cut, its daemons SIGKILLed).
# Measured from the crash: the time until 99 % and 100 % of the connections are re-established,
# each connection's own reconnect time (lost to back, p99), and the failed attempts (refused,
# timed out, other). Medians of TRIALS.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TRIALS="${TRIALS:-3}"
CONNECTIONS="${CONNECTIONS:-5000}"
needs_root storm.sh
release_build -p halo -p halo-probe
HALO=$PWD/target/release/halo
PROBE=$PWD/target/release/probe
bench_work "hs$$"
# Two sockets a connection on each balancer, one on the client and on the server: the default
# soft limit of 1 024 would be the bottleneck (halo raises its own to the hard limit).
ulimit -n "$(ulimit -Hn)"

# Each trial gets a LAN of its own: 20 000 sockets a trial leave TIME_WAIT entries and orphans
# behind them, which the next trial on the same namespaces would inherit.
new_lan() {
  make_lan b1 b2 m1 c
  # The client stands for a whole cluster's clients and opens some 10 000 connections to one
  # address: the full port range and TIME_WAIT reuse.
  ip netns exec "$P-c" sysctl -qw net.ipv4.ip_local_port_range="1024 65535" net.ipv4.tcp_tw_reuse=1
}

drop_lan() {
  for ns in $(lan_namespaces); do ip netns del "$ns"; done
}

halo_conf() { # priority
  halo_log_toml
  halo_vrrp_toml "$1" 'advert_interval = "100ms"'
  halo_frontend_toml api 0.0.0.0:8443
  halo_backend_toml api 'interval = "1s"' m1=192.0.2.13:6443
}

classic_start() { # host priority
  local h=$1
  haproxy_api_cfg --defaults-maxconn 9000 "inter 1s" 192.0.2.13:6443 > "$WORK/$h.haproxy.cfg"
  keepalived_conf "$2" 3 0.1 > "$WORK/$h.conf"
  start_haproxy "$h" >/dev/null 2>&1
  start_keepalived "$h"
  echo $! > "$WORK/$h.keepalived.pid"
}

halo_start() { # host priority
  halo_conf "$2" > "$WORK/$1.toml"
  ip netns exec "$P-$1" "$HALO" run -c "$WORK/$1.toml" --pid-file "$WORK/$1.halo.run.pid" >/dev/null 2>>"$WORK/$1.log" &
  echo $! > "$WORK/$1.halo.pid"; track "$(cat "$WORK/$1.halo.pid")"
}

# crash HOST: every balancing and VRRP process of HOST SIGKILLed at once (keepalived's VRRP child
# first: it cleans up when only its parent dies). halo's guard is not spared: on a crashed host
# nothing runs.
crash() {
  local pid
  for f in "$WORK/$1".vrrp.pid "$WORK/$1".*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill -KILL $(pgrep -P "$pid" 2>/dev/null) "$pid" 2>/dev/null || true
  done
}

stop_all() {
  for h in b1 b2; do crash "$h"; rm -f "$WORK/$h".*.pid; done
  drop_vip b1 b2
}

# summary LOG FAULT_US: "<99 % back ms> <100 % back ms> <p99 reconnect ms> <refused> <timed out> <other>"
# over the connections lost after the fault ("inf" when some never came back).
summary() {
  # One line per connection lost after the fault and back: "<back after the fault> <lost to back>
  # <refused> <timed out> <other>", in µs.
  awk -v f="$2" '
    $1 < f { next }
    $2 == "lost" && !($3 in lost) { lost[$3] = $1 }
    $2 == "up" && ($3 in lost) && !($3 in back) { back[$3] = 1; print $1 - f, $1 - lost[$3], $4, $5, $6 }
  ' "$1" > "$1.back"
  local at took k
  at=$(cut -d' ' -f1 "$1.back" | sort -n)
  took=$(cut -d' ' -f2 "$1.back" | sort -n)
  k=$(wc -l < "$1.back")
  awk -v n="$CONNECTIONS" -v k="$k" -v at="$at" -v took="$took" '
    function nth(list, i,   v) { split(list, v, "\n"); return v[i] }
    END {
      i99 = int(n * 0.99 + 0.999)
      p99 = (k >= i99) ? sprintf("%.0f", nth(at, i99) / 1000) : "inf"
      all = (k >= n) ? sprintf("%.0f", nth(at, n) / 1000) : "inf"
      r99 = k ? sprintf("%.0f", nth(took, int(k * 0.99 + 0.999)) / 1000) : "-"
      printf "%s %s %s ", p99, all, r99
    }' /dev/null
  awk '{ r += $3; t += $4; o += $5 } END { printf "%d %d %d\n", r, t, o }' "$1.back"
}

# Every process a trial starts has its standard output elsewhere: the trial runs in a command
# substitution, which would wait for them.
trial() { # variant -> summary line
  local variant=$1 t0 fault_us client pid
  new_lan
  ip netns exec "$P-m1" "$PROBE" echo-serve 0.0.0.0:6443 >/dev/null &
  pid=$!; track "$pid"; echo "$pid" > "$WORK/m1.pid"
  case $variant in
    halo) halo_start b1 200; sleep 0.3; halo_start b2 100 ;;
    classic) classic_start b1 200; sleep 0.3; classic_start b2 100 ;;
  esac
  sleep 2
  wait_for_vip b1 || { echo "b1 is not master before the fault ($variant)" >&2; end_trial; return 1; }
  t0=$(date +%s%N)
  ip netns exec "$P-c" "$PROBE" storm 192.0.2.170:8443 "$CONNECTIONS" 30000 > "$WORK/client.log" &
  client=$!
  track "$client"
  # Every connection up (bounded: 20 s), then steady for a second.
  for _ in $(seq 200); do [ "$(grep -c ' up ' "$WORK/client.log" || true)" -ge "$CONNECTIONS" ] && break; sleep 0.1; done
  [ "$(grep -c ' up ' "$WORK/client.log" || true)" -ge "$CONNECTIONS" ] || {
    echo "only $(grep -c ' up ' "$WORK/client.log") of $CONNECTIONS connections up ($variant)" >&2
    kill -KILL "$client" 2>/dev/null || true
    end_trial
    return 1
  }
  sleep 1
  fault_us=$(( ($(date +%s%N) - t0) / 1000 ))
  ip -n "$P-sw" link set p-b1 down
  crash b1
  wait "$client" || true
  summary "$WORK/client.log" "$fault_us"
  end_trial
}

end_trial() {
  stop_all
  kill -KILL "$(cat "$WORK/m1.pid")" 2>/dev/null || true
  drop_lan
  sleep 1
}

declare -A OUT
for variant in ${VARIANTS:-halo classic}; do
  : > "$WORK/$variant.out"
  for t in $(seq "$TRIALS"); do
    s=$(trial "$variant") || { echo "$variant trial $t: failed (above), not counted" >&2; continue; }
    echo "$s" >> "$WORK/$variant.out"
    read -r a b r x y z <<<"$s"
    echo "$variant trial $t: 99 % back after $a ms, all after $b ms, p99 reconnect $r ms, failed attempts: $x refused, $y timed out, $z other" >&2
  done
  OUT[$variant]=$(for c in 1 2 3 4 5 6; do awk -v c="$c" '{ print $c }' "$WORK/$variant.out" | median; done | xargs)
done
echo "| median of $TRIALS, $CONNECTIONS connections | 99 % back, ms | 100 % back, ms | p99 reconnect, ms | refused | timed out | other |"
echo "|---|---|---|---|---|---|---|"
for variant in ${VARIANTS:-halo classic}; do
  read -r a b r x y z <<<"${OUT[$variant]}"
  echo "| $variant | $a | $b | $r | $x | $y | $z |"
done
