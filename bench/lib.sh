# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run, once the script has gone to the top of the
# tree): the preamble (root check, release build, work directory, cleanup at exit), every process
# started tracked and killed by PID at exit, every namespace named "$P-..." and deleted at exit,
# halo, haproxy and keepalived started in a host's namespace and their configurations written,
# and the arithmetic of outages and medians. The caller's `bench_work PREFIX` sets P (a prefix
# unique to the run) and WORK (a fresh directory) and arms the cleanup.

# needs_root SCRIPT [WHY]: stops the script (status 2) unless it runs as root.
needs_root() {
  [ "$(id -u)" -eq 0 ] || { echo "$1: needs root${2:+ ($2)}" >&2; exit 2; }
}

# release_build CARGO_ARG...: a quiet release build of the packages named (-p ...), lock file as is.
release_build() { cargo build --quiet --release --locked "$@"; }

# bench_work PREFIX [CLEANUP]: a fresh work directory WORK with an empty list of tracked PIDs, P set
# to PREFIX ("" for a script without namespaces), and CLEANUP (default bench_cleanup) run at exit.
bench_work() {
  WORK=$(mktemp -d)
  P=$1
  : > "$WORK/pids"
  # shellcheck disable=SC2064 # the handler is chosen now, by the caller
  trap "${2:-bench_cleanup}" EXIT
}

# track PID: a process killed at exit.
track() { echo "$1" >> "$WORK/pids"; }

# untrack PID: a process ended and reaped is no longer killed at exit (its PID may be reused).
untrack() { sed -i "/^$1\$/d" "$WORK/pids"; }

# bench_cleanup: every tracked process and every PID file's process SIGKILLed, the run's namespaces
# deleted, the work directory removed (kept with KEEP_WORK set).
bench_cleanup() {
  if [ -f "$WORK/pids" ]; then
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done < "$WORK/pids"
  fi
  for f in "$WORK"/*.pid; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true; done
  # Scripts on loopback only (lb.sh) have an empty prefix and no namespaces.
  if [ -n "${P:-}" ]; then
    for ns in $(lan_namespaces); do ip netns del "$ns" 2>/dev/null || true; done
  fi
  if [ -n "${KEEP_WORK:-}" ]; then echo "work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}

# lan_namespaces: the names of the run's namespaces ("$P-...").
lan_namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-" || true; }

# make_switch BRIDGE...: the switch namespace "$P-sw" with the BRIDGEs (no STP delay, no multicast
# snooping, bridged frames kept out of netfilter).
make_switch() {
  ip netns add "$P-sw"
  local br
  for br in "$@"; do
    ip -n "$P-sw" link add "$br" type bridge stp_state 0 forward_delay 0 mcast_snooping 0
    ip -n "$P-sw" link set "$br" up
  done
  ip netns exec "$P-sw" sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-arptables=0 2>/dev/null || true
}

# make_lan HOST...: a switch with one bridge (make_switch) and one namespace per host whose eth0 is
# a port of it, addressed 192.0.2.11, .12, ... in the order given. No default route: nothing leaves.
make_lan() {
  make_switch br0
  local i=10 h
  for h in "$@"; do
    i=$((i + 1))
    ip netns add "$P-$h"
    ip -n "$P-$h" link set lo up
    ip link add "p-$h" netns "$P-sw" type veth peer name eth0 netns "$P-$h"
    ip -n "$P-sw" link set "p-$h" master br0 up
    ip netns exec "$P-$h" sysctl -qw net.ipv4.conf.all.rp_filter=0
    ip -n "$P-$h" addr add "192.0.2.$i/24" dev eth0
    ip -n "$P-$h" link set eth0 up
  done
}

# holds HOST: whether HOST has the VIP 192.0.2.170/24 (no `| grep -q`: under pipefail, grep's
# early exit makes `ip` fail with SIGPIPE).
holds() { [[ " $(ip -n "$P-$1" -o addr show dev eth0) " == *" 192.0.2.170/24 "* ]]; }

# wait_for_vip HOST: whether HOST holds the VIP within 300 looks 50 ms apart (some 15 s).
wait_for_vip() {
  for _ in $(seq 300); do holds "$1" && break; sleep 0.05; done
  holds "$1"
}

# drop_vip HOST...: the VIP off each HOST's eth0, where a stopped or killed daemon may have left it.
drop_vip() {
  local h
  for h in "$@"; do ip -n "$P-$h" addr del 192.0.2.170/24 dev eth0 2>/dev/null || true; done
}

# ns HOST COMMAND...: COMMAND in HOST's namespace. Foreground only: `ip netns exec` execs the
# program, so only `ip netns exec ... &` itself gives the program's own PID.
ns() { ip netns exec "$P-$1" "${@:2}"; }

# wait_until SECONDS COMMAND...: polls every 50 ms; fails when time runs out.
wait_until() {
  local end=$((SECONDS + $1))
  shift
  while [ $SECONDS -lt "$end" ]; do "$@" && return 0; sleep 0.05; done
  return 1
}

# start_halo HOST [BINARY]: halo (BINARY, default HALO) run in HOST's namespace on $WORK/HOST.toml,
# pid file $WORK/HOST.halo.pid, errors appended to $WORK/HOST.log; tracked, and $! is its PID.
start_halo() {
  ip netns exec "$P-$1" "${2:-$HALO}" run -c "$WORK/$1.toml" --pid-file "$WORK/$1.halo.pid" 2>>"$WORK/$1.log" &
  track $!
}

# start_haproxy HOST [ARG...]: haproxy in the foreground in HOST's namespace on
# $WORK/HOST.haproxy.cfg (the ARGs added), its output where the call's goes; its PID in
# $WORK/HOST.haproxy.pid, tracked, and $!.
start_haproxy() {
  local h=$1
  shift
  ip netns exec "$P-$h" haproxy -db -f "$WORK/$h.haproxy.cfg" "$@" &
  echo $! > "$WORK/$h.haproxy.pid"
  track $!
}

# start_keepalived HOST: keepalived's VRRP alone (-P) in the foreground in HOST's namespace on
# $WORK/HOST.conf, pid files $WORK/HOST.{main,vrrp,check}.pid, output appended to $WORK/HOST.log;
# tracked, and $! is its PID.
start_keepalived() {
  ip netns exec "$P-$1" keepalived -n -l -D -P -f "$WORK/$1.conf" -p "$WORK/$1.main.pid" -r "$WORK/$1.vrrp.pid" -c "$WORK/$1.check.pid" >>"$WORK/$1.log" 2>&1 &
  track $!
}

# halo_log_toml: halo's [log] table at level warn.
halo_log_toml() { printf '[log]\nlevel = "warn"\n'; }

# halo_vrrp_toml PRIORITY [LINE...]: halo's [[vrrp]] instance VI_1 on eth0 (VRID 51) floating
# 192.0.2.170/24, the LINEs (e.g. 'advert_interval = "100ms"') before its addresses; lines printed
# right after it still belong to it.
halo_vrrp_toml() {
  printf '[[vrrp]]\nname = "VI_1"\ninterface = "eth0"\nvirtual_router_id = 51\npriority = %s\n' "$1"
  shift
  [ $# -eq 0 ] || printf '%s\n' "$@"
  printf 'virtual_addresses = ["192.0.2.170/24"]\n'
}

# halo_frontend_toml [--default-first-byte] NAME BIND [LINE...]: halo's [[frontend]] NAME listening
# on BIND for the backend NAME, the LINEs (e.g. 'max_connections = 100') added. No first-byte
# wait: the probes' servers speak first (greetings, bulk), and haproxy, the baseline, connects to
# a server at once too; with --default-first-byte the key is left out, so halo's default holds
# (a client silent for 5 s is closed unserved).
halo_frontend_toml() {
  local first_byte=yes
  if [ "$1" = --default-first-byte ]; then first_byte=""; shift; fi
  printf '[[frontend]]\nname = "%s"\nbind = ["%s"]\nbackend = "%s"\n' "$1" "$2" "$1"
  [ -z "$first_byte" ] || printf 'first_byte_timeout = "0s"\n'
  shift 2
  [ $# -eq 0 ] || printf '%s\n' "$@"
}

# halo_backend_toml [--drain-timeout DURATION] NAME HEALTH SERVER...: halo's [[backend]] NAME,
# health-checked over TCP with the HEALTH lines added ("" for none), and one [[backend.server]]
# per SERVER, written NAME=ADDRESS.
halo_backend_toml() {
  local drain="" server
  if [ "$1" = --drain-timeout ]; then drain=$2; shift 2; fi
  printf '[[backend]]\nname = "%s"\n' "$1"
  [ -z "$drain" ] || printf 'drain_timeout = "%s"\n' "$drain"
  printf '[backend.health]\nkind = "tcp"\n'
  [ -z "$2" ] || printf '%s\n' "$2"
  shift 2
  for server in "$@"; do printf '[[backend.server]]\nname = "%s"\naddress = "%s"\n' "${server%%=*}" "${server#*=}"; done
}

# QUICK_HEALTH: the HEALTH lines of the failover benches: a dead server is down within some 400 ms
# (checks 200 ms apart, 100 ms while it changes state, a 200 ms timeout, down after 2 failures).
# shellcheck disable=SC2034 # read by the scripts that source this file
QUICK_HEALTH=$'interval = "200ms"\nfast_interval = "100ms"\ntimeout = "200ms"\nfall = 2'

# haproxy_api_cfg [--stats-socket PATH] [--defaults-maxconn] [--frontend-maxconn N] MAXCONN CHECK
# SERVER...: haproxy's TCP frontend api on *:8443 for backend api with servers m1, m2, ... at the
# SERVER addresses, each `check` followed by CHECK ("" for nothing); MAXCONN in defaults too when
# asked, N as the frontend's own cap (and so its listen backlog) when given, and a stats socket
# that hands the listeners over (-x) when given.
haproxy_api_cfg() {
  local stats="" defaults_maxconn="" frontend_maxconn=""
  while :; do
    case $1 in
      --stats-socket) stats=$2; shift 2 ;;
      --defaults-maxconn) defaults_maxconn=yes; shift ;;
      --frontend-maxconn) frontend_maxconn=$2; shift 2 ;;
      *) break ;;
    esac
  done
  local maxconn=$1 check=$2 i=0 server
  shift 2
  printf 'global\n    maxconn %s\n' "$maxconn"
  [ -z "$stats" ] || printf '    stats socket %s mode 600 level admin expose-fd listeners\n' "$stats"
  printf 'defaults\n'
  [ -z "$defaults_maxconn" ] || printf '    maxconn %s\n' "$maxconn"
  printf '    mode tcp\n    timeout connect 1s\n    timeout client 1h\n    timeout server 1h\nfrontend api\n    bind *:8443\n'
  [ -z "$frontend_maxconn" ] || printf '    maxconn %s\n' "$frontend_maxconn"
  printf '    default_backend api\nbackend api\n'
  for server in "$@"; do
    i=$((i + 1))
    printf '    server m%s %s check%s\n' "$i" "$server" "${check:+ $check}"
  done
}

# keepalived_conf PRIORITY VERSION ADVERT_INT [TRACK_SCRIPT]: keepalived's VRRP instance VI_1 on
# eth0 (VRID 51, starting as BACKUP) floating 192.0.2.170/24, tracking the script when one is named.
keepalived_conf() { keepalived_instance VI_1 51 192.0.2.170/24 "$@"; }

# keepalived_instance NAME VRID VIP PRIORITY VERSION ADVERT_INT [TRACK_SCRIPT]: keepalived's VRRP
# instance NAME on eth0, starting as BACKUP; a VERSION of "" is not written (keepalived's 2).
keepalived_instance() {
  printf 'vrrp_instance %s {\n state BACKUP\n interface eth0\n virtual_router_id %s\n priority %s\n' "$1" "$2" "$4"
  [ -z "$5" ] || printf ' version %s\n' "$5"
  printf ' advert_int %s\n virtual_ipaddress {\n  %s\n }\n' "$6" "$3"
  [ -z "${7:-}" ] || printf ' track_script {\n  %s\n }\n' "$7"
  printf '}\n'
}

# sleep_random SECONDS SPAN_MS: sleeps SECONDS and a random part of SPAN_MS ms (a fault's phase).
sleep_random() { sleep "$(awk -v s="$1" -v e="$2" -v r="$RANDOM" 'BEGIN { printf "%.3f", s + (r % e) / 1000 }')"; }

# outage_ms LOG FAULT_US: in a probe log, the first failure after the fault to the first success
# after the last failure, in ms (0 when nothing failed, "inf" when it never recovered).
outage_ms() {
  awk -v f="$2" '$1 < f { next }
                 $2 == "fail" { if (!first) first = $1; last = $1; after = 0; next }
                 $2 == "ok" && last && !after { after = $1 }
                 END { if (!first) print 0; else if (!after) print "inf"; else printf "%.0f\n", (after - first) / 1000 }' "$1"
}

# median: of numbers on standard input ("inf" sorts last).
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : "-") }'; }

# nginx_start PORT [HTTP_DIRECTIVES]: nginx serving a tiny page from $WORK/www on 127.0.0.1:PORT
# (one process, no access log), tracked; HTTP_DIRECTIVES go into its http block.
nginx_start() {
  mkdir -p "$WORK/www"
  echo ok > "$WORK/www/index.html"
  cat > "$WORK/nginx.conf" <<NGINX
pid $WORK/nginx.pid;
error_log stderr crit;
master_process off;
events { worker_connections 4096; }
http { access_log off; ${2:-} server { listen 127.0.0.1:$1; root $WORK/www; } }
NGINX
  nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' & track $!
}

# install_missing COMMAND PACKAGE...: installs the Debian packages unless COMMAND is on the PATH.
install_missing() {
  local command=$1; shift
  command -v "$command" >/dev/null && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "$@" >/dev/null
}
