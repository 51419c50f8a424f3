#!/usr/bin/env bash
# A flood of silent clients against a capped frontend, halo against haproxy 2.6, in one run
# (root). Clients that connect and never speak (a scanner, a broken or hostile client, a half-open
# storm) must neither eat the balancer's descriptors and memory nor the server's connections, and
# a real client should still get through.
#
# LAN in network namespaces, a fresh one each trial: balancer b1 with one TCP frontend on :8443
# capped at 100 connections (halo `max_connections = 100` with its default first_byte_timeout of
# 5 s; haproxy `maxconn 100` on the frontend, `timeout client 1h`), one backend with one server
# m1 (probe echo-serve on :6443: it greets each connection with a line, then echoes), and a client
# namespace c. Per trial and balancer, c opens SILENT (default 1000) TCP connections to the
# frontend at once and holds them without sending a byte; while they are held, one real client
# connects, sends a line and waits for the first byte of an answer (at most BOUND seconds, default
# 30). The flood ends once the real client is done and at least MIN_HOLD seconds (default 12)
# have passed. Sampled every 100 ms during the flood: the balancer process's open descriptors
# (/proc/PID/fd), its VmRSS, the connections established to the server (ss in m1) and the
# connections waiting in the frontend's accept queue (ss in b1). Medians of TRIALS (default 3).
# Every process is tracked and killed by PID, every load bounded in count and time; traffic goes
# only to addresses of the run's namespaces (192.0.2.0/24, no route out).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TRIALS="${TRIALS:-3}"
SILENT="${SILENT:-1000}"
BOUND="${BOUND:-30}"
MIN_HOLD="${MIN_HOLD:-12}"
needs_root flood.sh
release_build -p halo-probe
if [ -z "${HALO:-}" ]; then
  release_build -p halo --no-default-features
  HALO=$PWD/target/release/halo
fi
PROBE=$PWD/target/release/probe
bench_work "hf$$"

# Hosts: b1 192.0.2.11 (balancer), m1 .12 (server), c .13 (clients).
FRONTEND=192.0.2.11:8443
SERVER=192.0.2.12:6443

{
  halo_log_toml
  halo_frontend_toml --default-first-byte api 0.0.0.0:8443 'max_connections = 100'
  halo_backend_toml api "" "m1=$SERVER"
} > "$WORK/b1.toml"
haproxy_api_cfg --frontend-maxconn 100 2000 "" "$SERVER" > "$WORK/b1.haproxy.cfg"

# The silent clients: ADDRESS COUNT HOLD_S. Opens COUNT non-blocking connections at once, says
# "opened" on standard error once every connect is under way, then holds them without sending for
# at most HOLD_S seconds (less when SIGTERMed), reading whatever comes; prints "<connected>
# <answered> <closed> <pending> <failed>": connections whose handshake completed (the client's
# view), that received bytes (the server's greeting: a server connection was spent on them), that
# the balancer closed (EOF or reset), whose connect was still under way, and whose connect failed.
cat > "$WORK/silent.py" <<'PY'
import resource, selectors, signal, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
count, hold = int(sys.argv[2]), float(sys.argv[3])
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
start = time.monotonic()
sel = selectors.DefaultSelector()
state = {}
for i in range(count):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((host, int(port)))
    sel.register(s, selectors.EVENT_WRITE, i)
    state[i] = "pending"
print("opened", file=sys.stderr, flush=True)
connected = answered = closed = failed = 0
while not stop and time.monotonic() - start < hold:
    for key, _ in sel.select(timeout=0.1):
        s, i = key.fileobj, key.data
        if state[i] == "pending":
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                state[i] = "failed"; failed += 1; sel.unregister(s); s.close()
            else:
                state[i] = "open"; connected += 1; sel.modify(s, selectors.EVENT_READ, i)
            continue
        try:
            data = s.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if data:
            if state[i] == "open":
                state[i] = "answered"; answered += 1
            continue
        state[i] = "closed"; closed += 1; sel.unregister(s); s.close()
pending = sum(1 for v in state.values() if v == "pending")
print(connected, answered, closed, pending, failed, flush=True)
PY

# The real client: ADDRESS BOUND_S. Connects, sends a line, waits for the first byte of an answer;
# prints "<ms from the connect to that byte> served", or "inf <why>" when it did not come within
# BOUND_S (all told).
cat > "$WORK/client.py" <<'PY'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
bound = float(sys.argv[2])
start = time.monotonic()
left = lambda: max(0.001, bound - (time.monotonic() - start))
s = socket.socket()
try:
    s.settimeout(left())
    s.connect((host, int(port)))
    s.settimeout(left())
    s.sendall(b"hello\n")
    s.settimeout(left())
    byte = s.recv(1)
    print(f"{(time.monotonic() - start) * 1000:.0f} served" if byte else "inf closed")
except socket.timeout:
    print("inf timeout")
except OSError as e:
    print(f"inf {type(e).__name__}")
PY

new_lan() { make_lan b1 m1 c; }
drop_lan() { for ns in $(lan_namespaces); do ip netns del "$ns"; done; }

# stop PID: SIGTERM, SIGKILL after 10 s, reaped and untracked.
stop() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 100); do
    { [ ! -e "/proc/$1" ] || [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" = Z ]; } && break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  untrack "$1"
}

# real_client BOUND_S: the real client's line (see client.py), from c.
real_client() { ip netns exec "$P-c" timeout $(($1 + 5)) python3 "$WORK/client.py" "$FRONTEND" "$1" || echo "inf killed"; }

served() { [[ $(real_client 2) == *served ]]; }

fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
rss() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }

# sample PID SECONDS: "<descriptors> <RSS KiB> <connections to the server> <accept queue>" every
# 100 ms until $WORK/stop exists or SECONDS have passed.
sample() {
  local end=$((SECONDS + $2)) upstream queue
  while [ $SECONDS -lt "$end" ] && [ ! -e "$WORK/stop" ] && [ -e "/proc/$1" ]; do
    upstream=$(ip netns exec "$P-m1" ss -Htn state established '( sport = :6443 )' | wc -l)
    # Summed over the listening sockets (halo binds one per worker thread, a SO_REUSEPORT group).
    queue=$(ip netns exec "$P-b1" ss -Hltn '( sport = :8443 )' | awk '{ q += $2 } END { print q + 0 }')
    echo "$(fds "$1") $(rss "$1") $upstream ${queue:-0}"
    sleep 0.1
  done
}

# trial SIDE: appends "<fds before> <fds peak> <RSS before> <RSS peak> <server connections peak>
# <accept queue peak> <real client ms> <connected> <answered> <closed> <pending> <failed>
# <hold s> <listen backlog>" to $WORK/SIDE.out; fails when the balancer does not serve before the
# flood.
trial() {
  local side=$1 balancer server silent sampler start line fd0 rss0 backlog
  new_lan
  ip netns exec "$P-m1" "$PROBE" echo-serve 0.0.0.0:6443 >/dev/null &
  server=$!; track "$server"
  case $side in
    halo) start_halo b1 ;;
    haproxy) start_haproxy b1 >>"$WORK/b1.haproxy.log" 2>&1 ;;
  esac
  balancer=$!
  if ! wait_until 20 served; then
    echo "$side does not serve before the flood" >&2
    stop "$balancer"; stop "$server"; rm -f "$WORK"/b1.*.pid; drop_lan
    return 1
  fi
  sleep 0.5
  fd0=$(fds "$balancer") rss0=$(rss "$balancer")
  backlog=$(ip netns exec "$P-b1" ss -Hltn '( sport = :8443 )' | awk '{ b += $3 } END { print b + 0 }')
  rm -f "$WORK/stop"
  sample "$balancer" $((BOUND + MIN_HOLD + 20)) > "$WORK/samples" &
  sampler=$!; track "$sampler"
  start=$SECONDS
  ip netns exec "$P-c" python3 "$WORK/silent.py" "$FRONTEND" "$SILENT" $((BOUND + MIN_HOLD + 10)) > "$WORK/silent.out" 2> "$WORK/silent.err" &
  silent=$!; track "$silent"
  wait_until 10 grep -q opened "$WORK/silent.err" || echo "$side: the silent clients did not open in 10 s" >&2
  sleep 2
  line=$(real_client "$BOUND")
  while [ $((SECONDS - start)) -lt "$MIN_HOLD" ]; do sleep 0.2; done
  stop "$silent"
  touch "$WORK/stop"
  wait "$sampler" || true
  untrack "$sampler"
  stop "$balancer"
  stop "$server"
  # Their PID files would have the cleanup kill whatever process reuses the PID.
  rm -f "$WORK"/b1.*.pid
  drop_lan
  [ -s "$WORK/silent.out" ] || echo "- - - - -" > "$WORK/silent.out"
  echo "$fd0 $(awk '$1 > m { m = $1 } END { print m + 0 }' "$WORK/samples") $rss0 \
$(awk '$2 > m { m = $2 } END { print m + 0 }' "$WORK/samples") \
$(awk '$3 > m { m = $3 } END { print m + 0 }' "$WORK/samples") \
$(awk '$4 > m { m = $4 } END { print m + 0 }' "$WORK/samples") \
${line%% *} $(cat "$WORK/silent.out") $((SECONDS - start)) ${backlog:--}" >> "$WORK/$side.out"
  echo "$side: real client: $line" >&2
  sleep 1
}

SIDES="halo haproxy"
for side in $SIDES; do : > "$WORK/$side.out"; done
for t in $(seq "$TRIALS"); do
  for side in $SIDES; do
    trial "$side" || { echo "$side trial $t: failed (above), not counted" >&2; continue; }
    read -r f0 f r0 r u q ms con ans clo pen fai hold bl < <(tail -1 "$WORK/$side.out")
    echo "$side trial $t: descriptors $f0 -> $f at most, RSS $r0 -> $r KiB at most, $u connections to the server at most, $q in the accept queue at most (backlog $bl); real client: $ms ms; silent: $con connected, $ans answered, $clo closed by the balancer, $pen pending, $fai failed, over $hold s" >&2
  done
done

col() { awk -v c="$2" '{ print $c }' "$WORK/$1.out" | median; }
# ratio A B: A / B to two places, "-" when either is not a number or B is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b == 0) print "-"; else printf "%.2fx\n", a / b }'; }
# served_s MS: the real client's time in seconds, or "BOUND+" when it was not served.
served_s() { awk -v v="$1" -v b="$BOUND" 'BEGIN { if (v ~ /^[0-9.]+$/) printf "%.3f\n", v / 1000; else print b "+" }'; }
row() { # label column
  local h a
  h=$(col halo "$2") a=$(col haproxy "$2")
  echo "| $1 | $h | $a | $(ratio "$h" "$a") |"
}
echo "binary: $HALO; haproxy: $(haproxy -v | awk 'NR == 1 { print $3 }')"
echo "| median of $TRIALS, $SILENT silent clients, cap 100 | halo | haproxy 2.6 | halo / haproxy |"
echo "|---|---|---|---|"
row "balancer's open descriptors before the flood" 1
row "balancer's open descriptors, peak" 2
row "balancer's RSS before the flood, KiB" 3
row "balancer's RSS, peak, KiB" 4
row "connections established to the server, peak" 5
row "connections waiting in the frontend's accept queue, peak" 6
h=$(col halo 7) a=$(col haproxy 7)
echo "| real client: connect to first answer byte, s | $(served_s "$h") | $(served_s "$a") | $(ratio "$h" "$a") |"
row "silent clients connected (client's view)" 8
row "silent clients given a server (got its greeting)" 9
row "silent clients closed by the balancer during the flood" 10
row "length of the flood, s" 13
