#!/usr/bin/env bash
# Installs every system package that halo's tests, benchmarks and demo use, on Debian 12.
# Idempotent: a second run installs nothing new. Needs root.
set -euo pipefail

packages=(
  iproute2      # ip netns, veth, bridge: the test topologies
  haproxy       # baseline balancer; renders are checked with `haproxy -c`
  keepalived    # VRRP peer; renders are checked with `keepalived --config-test`
  tshark        # independent VRRP decoder for interop tests
  curl          # the classic check script's client, used by its tests
  ca-certificates
  procps        # sysctl
  nginx-light   # a real TLS server that can answer an error status, for the check-script test
  util-linux    # unshare: a private mount namespace for keepalived --config-test
  systemd       # systemd-analyze verify on the rendered unit (nothing is started)
  iputils-ping  # a ping that must keep answering while halo host apply moves the NIC onto br0
)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: must run as root (it installs Debian packages)" >&2
  exit 2
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer no, non-interactively.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "setup.sh: all system packages present"
fi
