#!/bin/sh
# Health check for keepalived: the local API server must answer, and so must the VIP when this node holds it.
# Corpus helper: check.sh copies this file to /etc/keepalived/ inside a private mount namespace.
fail() { echo "check_apiserver: $*" >&2; exit 1; }
curl -sfk --max-time 2 -o /dev/null https://127.0.0.1:6443/healthz || fail "local apiserver not healthy"
if ip -brief address | grep -qw "${VIP:-192.0.2.1}"; then
    curl -sfk --max-time 2 -o /dev/null "https://${VIP:-192.0.2.1}:8443/healthz" || fail "VIP not healthy"
fi
exit 0
