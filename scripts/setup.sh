#!/usr/bin/env bash
# Installs every system package that halo's tests, benchmarks and demo use, on Debian 12, or
# only the packages named as arguments (scripts/lab.sh names the lab's). Idempotent: a second
# run installs nothing new. No service of a package starts during the install. Needs root.
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
  frr           # zebra, bgpd, bfdd, vtysh: the BGP tests' router and balancers (started by the tests, in namespaces)
  buildah       # scripts/image.sh: halo's image, FROM scratch, offline
  tini          # the image's PID 1 (tini-static)
  busybox-static # the image's /bin/sh for scripts
  podman        # runs the image and the rendered static pod (kube play) in the tests
  runc          # podman's runtime here (crun refuses this kernel's hybrid cgroups)
  catatonit     # the pause process of podman's pods
  containerd    # ctr images import of the image, as the kubelet's runtime would
  ignition      # ignition-validate for the ostree (Ignition) snippet in docs
  chromium      # the status page checked in a real browser (headless, driven over its DevTools protocol)
  rpm           # rpmbuild for scripts/rpm.sh; rpm for the package test's install into a scratch root
  jq            # scripts/test-monitoring.sh reads the Grafana dashboard
  clang         # builds the kernel data path's BPF program (crates/lb/bpf/forward.c) in every build
  libbpf-dev    # its <bpf/bpf_helpers.h>; halo links no libbpf (the program is loaded by a Rust crate)
  prometheus    # promtool: checks and unit-tests the alerting rules, checks the /metrics text (no server is started)
)

if [ "$#" -gt 0 ]; then
  packages=("$@")
fi

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
  # frr's postinst enables frr.service and starts it (haproxy's, keepalived's and nginx's do the
  # same): the tests start their own daemons inside namespaces, so nothing may start on the host.
  # invoke-rc.d and deb-systemd-invoke ask policy-rc.d first; 101 means "not allowed".
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# written by halo scripts/setup.sh for one apt-get run\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get install -y --no-install-recommends "${missing[@]}"
  if [[ " ${missing[*]} " == *" frr "* ]]; then
    # Not at boot either. And should a start have slipped through (a policy-rc.d of the host's
    # that allows it), the daemons this install started are stopped, by their pid files in
    # FRR's default pathspace (the tests' daemons use pathspaces of their own).
    [ -d /run/systemd/system ] && { systemctl disable --quiet --now frr.service || true; }
    for pidfile in /var/run/frr/*.pid; do
      [ -f "$pidfile" ] || continue
      pid=$(cat "$pidfile")
      if kill -0 "$pid" 2>/dev/null; then
        echo "setup.sh: stopping $(basename "$pidfile" .pid) (pid $pid), started by the frr package" >&2
        kill -TERM "$pid" || true
      fi
    done
  fi
  if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    # Only promtool is used: the server that the package enables is not wanted at boot either
    # (without a running systemd, `disable` removes the link all the same).
    if [ -d /run/systemd/system ]; then
      systemctl disable --quiet --now prometheus.service || true
    elif command -v systemctl >/dev/null; then
      systemctl disable --quiet prometheus.service || true
    fi
  fi
else
  echo "setup.sh: all system packages present"
fi
