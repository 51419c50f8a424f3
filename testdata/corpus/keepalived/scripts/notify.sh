#!/bin/sh
# Corpus helper: logs keepalived state changes. check.sh copies it to /etc/keepalived/.
# keepalived calls it as: notify.sh [TYPE NAME STATE PRIORITY] or with the arguments given in the config.
logger -t keepalived-notify -- "$*"
exit 0
