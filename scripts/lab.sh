#!/usr/bin/env bash
# halo's main job, end to end (root): build halo, then `halo lab` builds a throwaway cluster in
# network namespaces (switch, three TLS API-server stand-ins, three balancer hosts running the
# real daemon, a client), plays a failure scenario through it and judges it. Arguments go to
# `halo lab` (`--mode bgp` plays it on a routed topology with FRR, `--keep` leaves it up,
# `--report FILE` writes the timeline as JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/lab.sh: the lab creates network namespaces; run it as root (sudo scripts/lab.sh)" >&2
  exit 2
fi
# The lab needs iproute2 (ip netns), procps (sysctl) and, for `--mode bgp`, FRR (zebra, bgpd,
# bfdd and vtysh, run inside the lab's namespaces).
# setup.sh installs them without letting frr.service (or any other) start on the host.
scripts/setup.sh iproute2 procps ca-certificates frr clang libbpf-dev >/dev/null
cargo build --quiet --locked --release -p halo
exec target/release/halo lab "$@"
