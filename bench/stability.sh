#!/usr/bin/env bash
# Spurious failovers under CPU starvation, halo against keepalived 2.2.7 in one run (root).
# Two halo routers (VRID 51) and two keepalived routers (VRID 52) on one bridge, each pair at its
# default timers (halo: VRRPv3, 1 s adverts; keepalived: VRRPv2, 1 s), with a busy loop in every
# router namespace (4 on 2 cores) for DURATION seconds (default 600). After the first election
# every state change is spurious: the script counts them. Nothing leaves the namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DURATION="${DURATION:-600}"
needs_root stability.sh
release_build -p halo
HALO=$PWD/target/release/halo
bench_work "hs$$"

make_lan h1 h2 k1 k2

for h in h1:200 h2:100; do
  name=${h%%:*} prio=${h##*:}
  halo_vrrp_toml "$prio" > "$WORK/$name.toml"
  start_halo "$name"
done
for k in k1:200 k2:100; do
  name=${k%%:*} prio=${k##*:}
  keepalived_instance VI_2 52 192.0.2.171/24 "$prio" "" 1 > "$WORK/$name.conf"
  start_keepalived "$name"
done
sleep 10   # the first election, at 1 s adverts
count() { # log file, pattern -> transitions so far
  grep -c -E "$2" "$1" || true
}
base_h=$(( $(count "$WORK/h1.log" "to=(MASTER|BACKUP|FAULT)") + $(count "$WORK/h2.log" "to=(MASTER|BACKUP|FAULT)") ))
base_k=$(( $(count "$WORK/k1.log" "Entering (MASTER|BACKUP|FAULT)") + $(count "$WORK/k2.log" "Entering (MASTER|BACKUP|FAULT)") ))
echo "stability.sh: first election: $base_h halo and $base_k keepalived state changes" >&2
# Each pair makes 3 (INIT->BACKUP twice, BACKUP->MASTER once): fewer means nothing was counted.
[ "$base_h" -ge 3 ] && [ "$base_k" -ge 3 ] || { echo "stability.sh: the first election was not seen in the logs" >&2; exit 1; }
for h in h1 h2 k1 k2; do
  ip netns exec "$P-$h" timeout "$DURATION" sh -c 'while :; do :; done' &
  track $!
done
echo "stability.sh: ${DURATION}s with 4 busy loops on $(nproc) cores..." >&2
sleep "$DURATION"
sleep 2
spurious_h=$(( $(count "$WORK/h1.log" "to=(MASTER|BACKUP|FAULT)") + $(count "$WORK/h2.log" "to=(MASTER|BACKUP|FAULT)") - base_h ))
spurious_k=$(( $(count "$WORK/k1.log" "Entering (MASTER|BACKUP|FAULT)") + $(count "$WORK/k2.log" "Entering (MASTER|BACKUP|FAULT)") - base_k ))
echo "| ${DURATION} s, 4 busy loops on $(nproc) cores | halo (v3, 1 s) | keepalived (v2, 1 s) |"
echo "|---|---|---|"
echo "| state changes after the first election | $spurious_h | $spurious_k |"
