#!/bin/sh
# Corpus helper: succeeds when an haproxy process exists. check.sh copies it to /etc/keepalived/.
pidof haproxy >/dev/null 2>&1
