#!/usr/bin/env bash
# A new version of the balancer software on the master, seen by the clients: `halo upgrade`
# against the classic stack's `systemctl restart haproxy keepalived` (no systemd here: both
# stopped by PID with SIGTERM, as systemd stops them, then started again) and against haproxy's
# own hitless reload (`haproxy -x SOCKET -sf OLDPID`: the listening sockets passed over, the old
# process finishing its connections; keepalived untouched, so only the listener part).
#
# LAN in network namespaces: balancers b1 (master, priority 200) and b2 (backup, 100), three
# API-server stand-ins m1-m3 (probe echo-serve on :6443), a client c. Per trial: 50 streams held
# through the VIP (probe hold: still echoing at the end?), a new connection every 10 ms (probe
# connect), the VIP's holder sampled every 20 ms; the upgrade comes at a random moment 2-3 s in.
# Reported: medians over TRIALS of failed connects, streams cut, and VIP moves (holder changes).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TRIALS="${TRIALS:-5}"
needs_root upgrade.sh
release_build -p halo -p halo-probe
HALO=$PWD/target/release/halo
PROBE=$PWD/target/release/probe
bench_work "hu$$"

make_lan b1 b2 m1 m2 m3 c
for m in m1 m2 m3; do
  ip netns exec "$P-$m" "$PROBE" echo-serve 0.0.0.0:6443 &
  track $!
done
SERVERS=(192.0.2.13:6443 192.0.2.14:6443 192.0.2.15:6443)

halo_conf() { # priority
  local i=0 s servers=()
  for s in "${SERVERS[@]}"; do i=$((i + 1)); servers+=("m$i=$s"); done
  halo_log_toml
  halo_vrrp_toml "$1" 'advert_interval = "100ms"'
  halo_frontend_toml api 0.0.0.0:8443
  halo_backend_toml --drain-timeout 60s api 'interval = "200ms"' "${servers[@]}"
}

# stop_by_pid PIDFILE: SIGTERM (what systemctl stop sends), then wait for the exit (bounded).
stop_by_pid() {
  local pid; pid=$(cat "$1")
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
}

start_variant() { # variant
  case $1 in
    halo)
      mkdir -p "$WORK/installed" && cp "$HALO" "$WORK/installed/halo" && cp "$HALO-guard" "$WORK/installed/halo-guard"
      halo_conf 200 > "$WORK/b1.toml"; halo_conf 100 > "$WORK/b2.toml"
      start_halo b1 "$WORK/installed/halo"
      sleep 0.3
      start_halo b2 ;;
    *)
      for h in b1 b2; do haproxy_api_cfg --stats-socket "$WORK/$h.sock" 2000 "inter 200" "${SERVERS[@]}" > "$WORK/$h.haproxy.cfg"; done
      keepalived_conf 200 3 0.1 > "$WORK/b1.conf"; keepalived_conf 100 3 0.1 > "$WORK/b2.conf"
      for h in b1 b2; do
        start_haproxy "$h" >>"$WORK/$h.haproxy.log" 2>&1
        start_keepalived "$h"; echo $! > "$WORK/$h.keepalived.pid"
        sleep 0.3
      done ;;
  esac
}

# The upgrade itself, on b1.
upgrade() { # variant
  case $1 in
    halo)
      # A package upgrade: a new file renamed over the installed one, then halo upgrade.
      local old; old=$(cat "$WORK/b1.halo.pid")
      cp "$HALO" "$WORK/installed/halo.new" && mv "$WORK/installed/halo.new" "$WORK/installed/halo"
      ip netns exec "$P-b1" "$HALO" upgrade -c "$WORK/b1.toml" --pid-file "$WORK/b1.halo.pid" 2>>"$WORK/b1.log"
      # Every generation is tracked for the cleanup; a trial without a new one does not count.
      track "$(cat "$WORK/b1.halo.pid")"
      [ "$(cat "$WORK/b1.halo.pid")" != "$old" ] || { echo "halo upgrade did not hand over" >&2; return 1; } ;;
    classic-restart)
      local a b
      stop_by_pid "$WORK/b1.haproxy.pid" & a=$!
      stop_by_pid "$WORK/b1.keepalived.pid" & b=$!
      wait "$a" "$b"
      start_haproxy b1 >>"$WORK/b1.haproxy.log" 2>&1
      start_keepalived b1; echo $! > "$WORK/b1.keepalived.pid" ;;
    haproxy-reload)
      start_haproxy b1 -x "$WORK/b1.sock" -sf "$(cat "$WORK/b1.haproxy.pid")" >>"$WORK/b1.haproxy.log" 2>&1
      sleep 1
      kill -0 "$(cat "$WORK/b1.haproxy.pid")" 2>/dev/null || { echo "the reloaded haproxy does not run" >&2; return 1; } ;;
  esac
}

stop_variant() {
  for f in "$WORK"/b?.halo.pid "$WORK"/b?.haproxy.pid "$WORK"/b?.keepalived.pid "$WORK"/b?.main.pid "$WORK"/b?.vrrp.pid "$WORK"/b?.check.pid; do
    [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
  done
  # haproxy's old processes after -sf, and every halo generation, are in the tracked pids.
  while read -r pid; do
    case "$(cat "/proc/$pid/comm" 2>/dev/null)" in haproxy|halo|keepalived) kill -KILL "$pid" 2>/dev/null || true ;; esac
  done < "$WORK/pids"
  rm -f "$WORK"/b?.*.pid "$WORK"/b?.sock
  drop_vip b1 b2
  sleep 0.5
}

trial() { # variant -> "failed cut moves"
  local variant=$1 client holder sampler
  start_variant "$variant"
  sleep 3
  wait_for_vip b1 || { echo "b1 is not master before the upgrade ($variant)" >&2; return 1; }
  ip netns exec "$P-c" "$PROBE" hold 192.0.2.170:8443 50 9000 > "$WORK/hold.log" &
  holder=$!; track "$holder"
  sleep 0.5
  ip netns exec "$P-c" "$PROBE" connect 192.0.2.170:8443 10 8000 1000 > "$WORK/client.log" &
  client=$!; track "$client"
  ( for _ in $(seq 400); do
      if holds b1; then echo b1; elif holds b2; then echo b2; else echo none; fi
      sleep 0.02
    done ) > "$WORK/holders.log" &
  sampler=$!; track "$sampler"
  sleep_random 2 1000
  upgrade "$variant" >/dev/null || return 1
  wait "$client" || true
  wait "$holder" || true
  wait "$sampler" || true
  local failed cut moves
  failed=$(awk '$2 == "fail" { n++ } END { print n + 0 }' "$WORK/client.log")
  cut=$(awk '{ alive += $2; opened += $3 } END { print (opened ? 50 - alive : 50) }' "$WORK/hold.log")
  moves=$(awk '$1 != "none" { if (last && $1 != last) n++; last = $1 } END { print n + 0 }' "$WORK/holders.log")
  stop_variant
  echo "$failed $cut $moves"
}

declare -A FAILED CUT MOVES
VARIANTS="${VARIANTS:-halo classic-restart haproxy-reload}"
for variant in $VARIANTS; do
  : > "$WORK/$variant.out"
  for t in $(seq "$TRIALS"); do
    o=$(trial "$variant")
    echo "$o" >> "$WORK/$variant.out"
    echo "$variant trial $t: failed connects, streams cut (of 50), VIP moves: $o" >&2
  done
  FAILED[$variant]=$(awk '{ print $1 }' "$WORK/$variant.out" | median)
  CUT[$variant]=$(awk '{ print $2 }' "$WORK/$variant.out" | median)
  MOVES[$variant]=$(awk '{ print $3 }' "$WORK/$variant.out" | median)
done
echo "| median of $TRIALS | failed connects (one every 10 ms, 8 s) | streams cut (of 50) | VIP moves |"
echo "|---|---|---|---|"
for variant in $VARIANTS; do
  case $variant in
    halo) name='`halo upgrade` (halo backup)' ;;
    classic-restart) name='`systemctl restart haproxy keepalived` (stop + start by PID)' ;;
    haproxy-reload) name="haproxy's hitless reload (\`-x\` + \`-sf\`), keepalived untouched" ;;
  esac
  echo "| $name | ${FAILED[$variant]} | ${CUT[$variant]} | ${MOVES[$variant]} |"
done
