#!/usr/bin/env bash
# The VIP announced by BGP through FRR (ECMP over three balancers) against VRRP on the same
# routed topology, in one run (root).
#
# Network namespaces: a client c behind a router r (FRR bgpd + zebra + bfdd, ECMP over up to 8
# paths, L4 hashing), balancers b1..b3 on a fabric LAN with r, an API-server stand-in s on a
# backend LAN (probe listen :6443, bulk-serve :6444, echo-serve :6445). Every balancer runs halo
# (frontends :8443-:8445, the balancer tracker without a weight); in BGP mode with FRR configured by
# `halo render frr` and [[announce]] 10.0.0.100/32, in VRRP mode with [[vrrp]] 172.31.1.100 on
# the fabric LAN (v3, 100 ms adverts, b1 the master). The client connects every 10 ms (probe).
# Faults hit b1 at a random phase of a second:
#   tracker - b1 loses its path to the API server (blackhole route): its tracker fails
#   crash   - b1's cable pulled, halo (and its guard) and FRR SIGKILLed: a host crash (BFD)
#   kill    - halo SIGKILLed on b1 (its guard removes the address)
# Outage = first failed connect after the fault .. first success after the last failure; with
# ECMP only b1's share of the connections fails in that window, so the failed ones are counted
# too. Then, with 1, 2 and 3 balancers announcing: the connection rate (32 clients, connect +
# first byte + close, back to back) and the throughput of 12 downloads with each balancer's
# backend link shaped to 100 Mbit/s (the capacity of one balancer); VRRP serves from one.
# Last, established connections when b1 withdraws (its tracker fails): 60 connections held
# open through the three balancers, how many of those through b2 and b3 still work after it,
# with the hash-threshold group FRR programs, and with a resilient group (FRR 8.4 cannot
# program one: a loop copies zebra's next hops into one, routed by a rule before the main table).
# Prints a markdown table of medians over TRIALS (default 5). Nothing leaves the namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TRIALS="${TRIALS:-5}"
PARTS="${PARTS:-outage scale survival}" # any of them, to run fewer
needs_root bgp.sh "network namespaces"
{ [ -x /usr/lib/frr/bgpd ] && command -v vtysh >/dev/null; } || { echo "bgp.sh: run scripts/setup.sh first (frr)" >&2; exit 2; }
release_build -p halo -p halo-probe
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
HALO=$TARGET/release/halo
PROBE=$TARGET/release/probe
# FRR's pathspaces go with the namespaces.
cleanup() {
  bench_cleanup
  rm -rf /var/run/frr/"$P"-*
}
bench_work "hg$$" cleanup

VIP=10.0.0.100        # announced by BGP
VRRP_VIP=172.31.1.100 # floated by VRRP on the fabric LAN
SERVER=10.10.0.100

# plug HOST ETH BRIDGE ADDRESS: a veth whose switch end (p-HOST or q-HOST) is a port of BRIDGE.
plug() {
  local port="p-$1"
  [ "$3" = br1 ] && port="q-$1"
  ip link add "$port" netns "$P-sw" type veth peer name "$2" netns "$P-$1"
  ip -n "$P-sw" link set "$port" master "$3" up
  ip -n "$P-$1" addr add "$4" dev "$2"
  ip -n "$P-$1" link set "$2" up
}

setup() {
  make_switch br0 br1
  local h i
  for h in r c s b1 b2 b3; do
    ip netns add "$P-$h"
    ip -n "$P-$h" link set lo up
    ns "$h" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
  done
  plug r eth0 br0 172.31.1.1/24
  plug s eth0 br1 "$SERVER/24"
  for i in 1 2 3; do
    plug "b$i" eth0 br0 "172.31.1.1$i/24"
    plug "b$i" eth1 br1 "10.10.0.1$i/24"
    ip -n "$P-b$i" route add 10.0.1.0/24 via 172.31.1.1
  done
  ip link add ethc netns "$P-r" type veth peer name eth0 netns "$P-c"
  ip -n "$P-r" addr add 10.0.1.1/24 dev ethc
  ip -n "$P-r" link set ethc up
  ip -n "$P-c" addr add 10.0.1.2/24 dev eth0
  ip -n "$P-c" link set eth0 up
  ip -n "$P-c" route add 10.0.0.0/24 via 10.0.1.1
  ip -n "$P-c" route add 172.31.1.0/24 via 10.0.1.1
  ns r sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
  # The rate test opens connections back to back.
  ns c sysctl -qw net.ipv4.tcp_tw_reuse=1 "net.ipv4.ip_local_port_range=1024 65000"
  ip netns exec "$P-s" "$PROBE" listen 0.0.0.0:6443 &
  track $!
  ip netns exec "$P-s" "$PROBE" bulk-serve 0.0.0.0:6444 &
  track $!
  ip netns exec "$P-s" "$PROBE" echo-serve 0.0.0.0:6445 &
  track $!
  router_conf > "$WORK/r.frr.conf"
  frr_start r "$WORK/r.frr.conf"
}

router_conf() {
  printf 'frr defaults datacenter\nhostname r\n!\nbfd\n profile halo\n  detect-multiplier 3\n  receive-interval 100\n  transmit-interval 100\n exit\nexit\n!\n'
  printf 'router bgp 65000\n bgp router-id 172.31.1.1\n no bgp ebgp-requires-policy\n timers bgp 3 9\n neighbor B peer-group\n neighbor B remote-as 65001\n neighbor B bfd profile halo\n'
  for i in 1 2 3; do printf ' neighbor 172.31.1.1%s peer-group B\n' "$i"; done
  printf ' address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\nexit\n'
}

# frr_start HOST CONFIG: zebra, bfdd and bgpd in HOST's namespace under the pathspace $P-HOST
# (sockets and pid files in /var/run/frr/$P-HOST), in the foreground (killed by PID), then the
# configuration loaded through vtysh as FRR's boot loads frr.conf.
frr_start() {
  local h=$1 d=/var/run/frr/$P-$1 daemon sock
  rm -rf "$d"
  mkdir -p "$d"
  cp "$2" "$d/frr.conf"
  : > "$d/empty.conf"
  chown -R frr:frr "$d"
  : > "$WORK/$h.frr.pids"
  for daemon in zebra bfdd bgpd; do
    ip netns exec "$P-$h" /usr/lib/frr/$daemon -F datacenter -N "$P-$h" -f "$d/empty.conf" -i "$d/$daemon.pid" -P 0 --log stdout >> "$WORK/$h.$daemon.log" 2>&1 &
    track $!
    echo $! >> "$WORK/$h.frr.pids"
    sock=$d/$daemon.vty
    [ $daemon = zebra ] && sock=$d/zserv.api
    wait_until 10 test -S "$sock" || { echo "bgp.sh: $daemon did not start in $h" >&2; exit 1; }
  done
  wait_until 10 test -S "$d/zebra.vty" || { echo "bgp.sh: zebra's vty in $h" >&2; exit 1; }
  local said
  said=$(vtysh -N "$P-$h" -f "$d/frr.conf" 2>&1 | grep -v vtysh.conf || true)
  [[ "$said" != *%* ]] || { echo "bgp.sh: FRR in $h refused its configuration: $said" >&2; exit 1; }
}

frr_kill() {
  local pid
  [ -f "$WORK/$1.frr.pids" ] || return 0
  while read -r pid; do
    kill -KILL "$pid" 2>/dev/null || true
    { wait "$pid"; } 2>/dev/null || true
    untrack "$pid"
  done < "$WORK/$1.frr.pids"
  rm -f "$WORK/$1.frr.pids"
}

halo_conf() { # mode host-index
  halo_log_toml
  if [ "$1" = bgp ]; then
    cat <<TOML
[bgp]
asn = 65001
router_id = "172.31.1.1$2"
[[bgp.neighbor]]
address = "172.31.1.1"
asn = 65000
[[announce]]
name = "api"
address = "$VIP/32"
track = ["local-balancer"]
TOML
  else
    cat <<TOML
[[vrrp]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 51
priority = $((250 - 50 * $2))
advert_interval = "100ms"
virtual_addresses = ["$VRRP_VIP/24"]
track = ["local-balancer"]
TOML
  fi
  local fe name port backport
  for fe in api:8443:6443 bulk:8444:6444 echo:8445:6445; do
    IFS=: read -r name port backport <<< "$fe"
    halo_frontend_toml "$name" "0.0.0.0:$port"
    halo_backend_toml "$name" "$QUICK_HEALTH" "s1=$SERVER:$backport"
  done
  cat <<TOML
[[tracker]]
name = "local-balancer"
kind = "balancer"
frontend = "api"
TOML
}

# start MODE COUNT: halo (and in BGP mode FRR) on b1..bCOUNT; waits until they serve.
start() {
  local mode=$1 n=$2 i
  for i in $(seq "$n"); do
    halo_conf "$mode" "$i" > "$WORK/b$i.toml"
    if [ "$mode" = bgp ]; then
      "$HALO" render frr -c "$WORK/b$i.toml" > "$WORK/b$i.frr.conf"
      frr_start "b$i" "$WORK/b$i.frr.conf"
    fi
    ip netns exec "$P-b$i" "$HALO" run -c "$WORK/b$i.toml" --pid-file "$WORK/b$i.halo.pid" >> "$WORK/b$i.log" 2>&1 &
    echo $! > "$WORK/b$i.halo"
    track "$(cat "$WORK/b$i.halo")"
  done
  if [ "$mode" = bgp ]; then
    wait_until 30 routed "$n" || { echo "bgp.sh: r never routed the VIP to $n balancers" >&2; exit 1; }
    wait_until 30 settled "$n" || { echo "bgp.sh: r's route never settled (BFD up, no change for 2 s)" >&2; exit 1; }
  else
    wait_until 30 vrrp_master b1 || { echo "bgp.sh: b1 never became the VRRP master" >&2; exit 1; }
    sleep 1
  fi
}

# settled N: r routes to N balancers, their BFD sessions are up, and the route stayed for 2 s
# (a fresh session may be reset once by its bgpd while BFD comes up, or by a collision; zebra
# makes a new nexthop group, "nhid", for every change).
settled() {
  local before
  routed "$1" || return 1
  before=$(ip -n "$P-r" route show exact "$VIP/32")
  sleep 2
  [ "$(ip -n "$P-r" route show exact "$VIP/32")" = "$before" ] && routed "$1" && bfd_up "$1"
}

# stop: every halo SIGKILLed (its guard removes its addresses) and every balancer's FRR.
stop() {
  local i pid
  for i in 1 2 3; do
    if [ -f "$WORK/b$i.halo" ]; then
      pid=$(cat "$WORK/b$i.halo")
      kill -KILL "$pid" 2>/dev/null || true
      { wait "$pid"; } 2>/dev/null || true
      untrack "$pid"
      rm -f "$WORK/b$i.halo" "$WORK/b$i.halo.pid"
    fi
    frr_kill "b$i"
    ip -n "$P-b$i" addr del "$VIP/32" dev lo 2>/dev/null || true
    ip -n "$P-b$i" addr del "$VRRP_VIP/24" dev eth0 2>/dev/null || true
  done
  wait_until 30 routed 0 || { echo "bgp.sh: the VIP is still routed after every balancer stopped" >&2; exit 1; }
}

# routed N: r forwards the BGP VIP to exactly N balancers.
routed() {
  local via
  via=$(ip -n "$P-r" route show exact "$VIP/32" | { grep -o 'via 172\.31\.1\.1[0-9]' || true; } | sort -u | wc -l)
  [ "$via" -eq "$1" ]
}

bfd_up() {
  local up
  up=$(vtysh -N "$P-r" -c 'show bfd peers brief' 2>/dev/null | grep -c ' up ' || true)
  [ "$up" -ge "$1" ]
}

vrrp_master() { [[ " $(ip -n "$P-$1" -o addr show dev eth0) " == *" $VRRP_VIP/24 "* ]]; }

# crash HOST: cable pulled (r's side stays up: only BFD or VRRP's timers can tell), then halo's
# guard, halo and FRR SIGKILLed at once so that nothing cleans up.
crash() {
  local pid guard
  ip -n "$P-sw" link set "p-$1" down
  pid=$(cat "$WORK/$1.halo")
  guard=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null || true)
  # shellcheck disable=SC2086
  kill -KILL $guard "$pid" 2>/dev/null || true
  frr_kill "$1"
}

trial() { # mode scenario -> "outage_ms failed total" in $WORK/result
  local mode=$1 scenario=$2 target=$VIP t0 fault_us client
  [ "$mode" = vrrp ] && target=$VRRP_VIP
  start "$mode" 3
  t0=$(date +%s%N)
  ip netns exec "$P-c" "$PROBE" connect "$target:8443" 10 5000 20 > "$WORK/client.log" &
  client=$!
  track "$client"
  sleep_random 1 1000
  fault_us=$(( ($(date +%s%N) - t0) / 1000 ))
  case $scenario in
    tracker) ip -n "$P-b1" route add blackhole "$SERVER/32" ;;
    crash) crash b1 ;;
    kill) kill -KILL "$(cat "$WORK/b1.halo")" ;;
  esac
  wait "$client" || true
  untrack "$client"
  echo "$(outage_ms "$WORK/client.log" "$fault_us") $(grep -c fail "$WORK/client.log" || true) $(wc -l < "$WORK/client.log")" > "$WORK/result"
  stop
  ip -n "$P-b1" route del blackhole "$SERVER/32" 2>/dev/null || true
  ip -n "$P-sw" link set p-b1 up
  sleep 0.3
}

setup
MODES="bgp vrrp"
SCENARIOS="tracker crash kill"
declare -A OUT FAILED RATE BULK SURVIVED B1
part() { [[ " $PARTS " == *" $1 "* ]]; }
part outage || MODES=""
for mode in $MODES; do
  for scenario in $SCENARIOS; do
    : > "$WORK/$mode.$scenario.out"
    : > "$WORK/$mode.$scenario.failed"
    for t in $(seq "$TRIALS"); do
      trial "$mode" "$scenario"
      read -r o f n < "$WORK/result"
      echo "$o" >> "$WORK/$mode.$scenario.out"
      echo "$f" >> "$WORK/$mode.$scenario.failed"
      echo "$mode $scenario trial $t: outage $o ms, $f of $n connections failed" >&2
    done
    OUT[$mode/$scenario]=$(median < "$WORK/$mode.$scenario.out")
    FAILED[$mode/$scenario]=$(median < "$WORK/$mode.$scenario.failed")
  done
done

# Scale-out. Each balancer's backend link is shaped (switch side, towards the balancer) so
# that one balancer's capacity, not this machine's two cores, bounds the downloads.
shape() {
  local i
  for i in 1 2 3; do
    if [ "$1" = add ]; then
      tc -n "$P-sw" qdisc add dev "q-b$i" root tbf rate 100mbit burst 128kb latency 50ms
    else
      tc -n "$P-sw" qdisc del dev "q-b$i" root
    fi
  done
}
measure() { # mode count target
  local t r b
  start "$1" "$2"
  : > "$WORK/rate" ; : > "$WORK/bulk"
  for t in $(seq "$TRIALS"); do
    read -r _ _ r < <(ns c "$PROBE" rate "$3:8443" 32 3000 1000)
    echo "$r" >> "$WORK/rate"
    read -r _ b _ < <(ns c "$PROBE" bulk-get "$3:8444" 12 3000)
    echo "$b" >> "$WORK/bulk"
    echo "$1 with $2 balancers trial $t: $r connections/s, $b Mbit/s" >&2
  done
  RATE[$1/$2]=$(median < "$WORK/rate")
  BULK[$1/$2]=$(median < "$WORK/bulk")
  stop
}
if part scale; then
  shape add
  for n in 1 2 3; do measure bgp "$n" "$VIP"; done
  measure vrrp 3 "$VRRP_VIP"
  shape del
fi

# mirror: until killed (bounded), copies the next hops zebra installs on r for the VIP into the
# resilient group 900 (members 901-903 = b1-b3), which table 100 routes the VIP through.
mirror() {
  local want have="" i
  for i in 1 2 3; do ip -n "$P-r" nexthop replace id "90$i" via "172.31.1.1$i" dev eth0; done
  ip -n "$P-r" rule add to "$VIP/32" lookup 100 pref 100
  for _ in $(seq 6000); do
    want=$(ip -n "$P-r" route show exact "$VIP/32" | { grep -o 'via 172\.31\.1\.1[0-9]' || true; } | sed 's/via 172\.31\.1\.1/90/' | sort -u | paste -sd/)
    if [ "$want" != "$have" ]; then
      if [ -z "$want" ]; then
        ip -n "$P-r" route del "$VIP/32" table 100 2>/dev/null || true
        ip -n "$P-r" nexthop del id 900 2>/dev/null || true
      else
        ip -n "$P-r" nexthop replace id 900 group "$want" type resilient buckets 128 idle_timer 10 || true
        ip -n "$P-r" route replace "$VIP/32" nhid 900 table 100 || true
      fi
      have=$want
    fi
    sleep 0.01
  done
}

unmirror() {
  local id
  ip -n "$P-r" rule del pref 100 2>/dev/null || true
  ip -n "$P-r" route flush table 100 2>/dev/null || true
  for id in 900 901 902 903; do ip -n "$P-r" nexthop del id "$id" 2>/dev/null || true; done
}

mirrored() { [[ "$(ip -n "$P-r" nexthop show id 900 2>/dev/null)" == *"group 901/902/903 "* ]]; }

survival() { # plain|resilient -> "alive total b1_alive b1_total" in $WORK/result
  local mirror_pid="" hold
  start bgp 3
  if [ "$1" = resilient ]; then
    mirror &
    mirror_pid=$!
    track "$mirror_pid"
    wait_until 10 mirrored || { echo "bgp.sh: the resilient group never held b1-b3" >&2; exit 1; }
  fi
  ip netns exec "$P-c" "$PROBE" hold "$VIP:8445" 60 4000 > "$WORK/hold.out" &
  hold=$!
  track "$hold"
  sleep 1.5
  ip -n "$P-b1" route add blackhole "$SERVER/32"
  wait "$hold" || true
  untrack "$hold"
  awk '$1 == "10.10.0.11" { b += $2; bt += $3; next } { o += $2; ot += $3 } END { print o + 0, ot + 0, b + 0, bt + 0 }' "$WORK/hold.out" > "$WORK/result"
  if [ -n "$mirror_pid" ]; then
    kill "$mirror_pid" 2>/dev/null || true
    { wait "$mirror_pid"; } 2>/dev/null || true
    untrack "$mirror_pid"
    unmirror
  fi
  stop
  ip -n "$P-b1" route del blackhole "$SERVER/32"
}

VARIANTS="plain resilient"
part survival || VARIANTS=""
for variant in $VARIANTS; do
  : > "$WORK/$variant.survived"
  : > "$WORK/$variant.b1"
  for t in $(seq "$TRIALS"); do
    survival "$variant"
    read -r a n ba bn < "$WORK/result"
    echo "$ba $bn" >> "$WORK/$variant.b1"
    awk -v a="$a" -v n="$n" 'BEGIN { printf "%.0f\n", (n ? 100 * a / n : 0) }' >> "$WORK/$variant.survived"
    echo "survival $variant trial $t: $a of $n connections through b2/b3 still work after b1 withdrew ($ba of $bn through b1)" >&2
  done
  SURVIVED[$variant]=$(median < "$WORK/$variant.survived")
  B1[$variant]=$(awk '{ a += $1; n += $2 } END { print a + 0 " of " n + 0 }' "$WORK/$variant.b1")
done

echo "measured at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, FRR $(dpkg-query -W -f='${Version}' frr 2>/dev/null || echo '?')"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
if part outage; then
  echo
  echo "| median of $TRIALS | BGP + ECMP, 3 balancers | VRRP v3 100 ms, 3 balancers |"
  echo "|---|---|---|"
  for scenario in $SCENARIOS; do
    echo "| $scenario: client outage, ms | ${OUT[bgp/$scenario]} | ${OUT[vrrp/$scenario]} |"
    echo "| $scenario: failed connects (one every 10 ms, 20 ms timeout) | ${FAILED[bgp/$scenario]} | ${FAILED[vrrp/$scenario]} |"
  done
fi
if part scale; then
  echo
  echo "| median of $TRIALS, balancers serving | connections/s (32 clients) | ratio to 1 | Mbit/s, 12 downloads, 100 Mbit/s per balancer | ratio to 1 |"
  echo "|---|---|---|---|---|"
  for n in 1 2 3; do
    echo "| BGP, $n announcing | ${RATE[bgp/$n]} | $(ratio "${RATE[bgp/$n]}" "${RATE[bgp/1]}") | ${BULK[bgp/$n]} | $(ratio "${BULK[bgp/$n]}" "${BULK[bgp/1]}") |"
  done
  echo "| VRRP, 3 running (the master serves) | ${RATE[vrrp/3]} | $(ratio "${RATE[vrrp/3]}" "${RATE[bgp/1]}") | ${BULK[vrrp/3]} | $(ratio "${BULK[vrrp/3]}" "${BULK[bgp/1]}") |"
fi
if part survival; then
  echo
  echo "| median of $TRIALS: b1 withdraws (tracker), 60 connections held open | hash-threshold ECMP (FRR's group) | resilient next-hop group |"
  echo "|---|---|---|"
  echo "| connections through b2 and b3 that still work, % | ${SURVIVED[plain]} | ${SURVIVED[resilient]} |"
  echo "| connections through b1 that still work, all trials | ${B1[plain]} | ${B1[resilient]} |"
fi
