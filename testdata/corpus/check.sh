#!/bin/sh
# Check every corpus file with the real tools (Debian haproxy 2.6, keepalived 2.2.7). Run as root.
# Never touches the host's network: haproxy runs in a private mount namespace where /etc/hosts is
# testdata/corpus/hosts and nsswitch resolves hosts from files only (no DNS); keepalived runs in a
# throwaway network namespace holding veth interfaces named in testdata/corpus/interfaces, with a
# tmpfs over /etc/keepalived holding testdata/corpus/keepalived/scripts/*.
# Output: one line per file: <file> <exit code> <accepted|rejected>
#   haproxy -c:               0 accepted; anything else rejected
#   keepalived --config-test: 0 accepted; 6 accepted only when its sole message is the
#                             "SECURITY VIOLATION - scripts are being executed but script_security not
#                             enabled" notice (keepalived runs the scripts anyway; exit 6 also hides other
#                             errors, so any other message makes it rejected); 2, 4, 5 rejected
set -u
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n' > "$tmp/nsswitch.conf"
verbose=${VERBOSE:-0}

for f in "$here"/haproxy/*.cfg; do
    out=$(unshare -m sh -c "mount --bind '$here/hosts' /etc/hosts && mount --bind '$tmp/nsswitch.conf' /etc/nsswitch.conf && haproxy -c -f '$f'" 2>&1)
    rc=$?
    v=rejected; [ $rc -eq 0 ] && v=accepted
    echo "haproxy/$(basename "$f") $rc $v"
    [ "$verbose" = 1 ] && echo "$out" | grep -v NOTICE | sed 's/^/    /'
done

ns=corpus-$$
ip netns add "$ns" || exit 1
i=0
while read -r ifc; do
    case "$ifc" in ''|'#'*) continue;; esac
    i=$((i+1))
    ip -n "$ns" link add "$ifc" type veth peer name "cpeer$i"
    ip -n "$ns" link set "$ifc" up
    ip -n "$ns" link set "cpeer$i" up
done < "$here/interfaces"
for f in "$here"/keepalived/*.conf; do
    out=$(ip netns exec "$ns" unshare -m sh -c "mount -t tmpfs -o mode=755 tmpfs /etc/keepalived && cp '$here'/keepalived/scripts/* /etc/keepalived/ && chown root:root /etc/keepalived/* && chmod 755 /etc/keepalived/* && keepalived --config-test -l -f '$f'" 2>&1)
    rc=$?
    v=rejected
    if [ $rc -eq 0 ]; then v=accepted
    elif [ $rc -eq 6 ] && [ -z "$(echo "$out" | grep -v '^$' | grep -v '^SECURITY VIOLATION - scripts are being executed but script_security not enabled\.$')" ]; then v=accepted
    fi
    echo "keepalived/$(basename "$f") $rc $v"
    [ "$verbose" = 1 ] && echo "$out" | sed 's/^/    /'
done
ip netns del "$ns"
