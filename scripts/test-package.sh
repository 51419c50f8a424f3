#!/usr/bin/env bash
# Installs the .deb with dpkg -i (root), checks what it installed, and purges it again:
# `halo --version`, `systemd-analyze verify` on the unit, completions, man page, example config,
# that nothing was enabled or started, and the postinst of a package upgrade: a halo running from
# the package (on loopback) hands over to the reinstalled binary (`halo upgrade`). Exit 0 when
# all hold.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "test-package.sh: dpkg -i needs root" >&2
  exit 2
fi
if [ -e /usr/bin/halo ] && ! dpkg-query -W halo >/dev/null 2>&1; then
  echo "test-package.sh: /usr/bin/halo exists and is not from the package; not touching it" >&2
  exit 2
fi
deb=$(scripts/package.sh | tail -1)
echo "package: $deb ($(du -h "$deb" | cut -f1))"
trap 'dpkg -P halo >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb" >/dev/null
fail() { echo "package: FAIL: $*" >&2; exit 1; }
version=$(/usr/bin/halo --version) || fail "halo --version"
[ "$version" = "halo $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ] || fail "unexpected version: $version"
unit=/lib/systemd/system/halo.service
grep -q '^Type=notify$' "$unit" || fail "the unit is not Type=notify"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
fi
for f in /usr/share/bash-completion/completions/halo /usr/share/zsh/vendor-completions/_halo \
  /usr/share/fish/vendor_completions.d/halo.fish /usr/share/doc/halo/examples/halo.toml; do
  [ -s "$f" ] || fail "$f missing"
done
zcat /usr/share/man/man1/halo.1.gz | grep -q '^\.TH halo 1' || fail "man page"
grep -q '_halo()' /usr/share/bash-completion/completions/halo || fail "bash completion"
/usr/bin/halo check -c /usr/share/doc/halo/examples/halo.toml >/dev/null || fail "the shipped example does not pass halo check"
[ -x /usr/bin/halo-guard ] || fail "no /usr/bin/halo-guard (the VIP guard halo run starts)"
/usr/bin/halo --help | grep -qw lab && fail "the packaged binary offers halo lab"
# The faults the tests inject (feature test-hooks) are not in the product: the packaged binary
# holds none of their variables' names, while the tests' own build (HOOKED_BINARY, which
# scripts/test.sh names) does, else this grep would prove nothing.
for hook in HALO_TEST_PANIC_INSTANCE HALO_TEST_UPGRADE_KILLED_AT HALO_TEST_UPGRADE_STALLED_AT HALO_TEST_VIP_REFRESH_FAILS HALO_TEST_STALL_AFTER_STATUS_BIND; do
  grep -qaF "$hook" /usr/bin/halo && fail "the packaged binary carries the test hook $hook"
  if [ -n "${HOOKED_BINARY:-}" ]; then
    grep -qaF "$hook" "$HOOKED_BINARY" || fail "the tests' binary $HOOKED_BINARY lacks $hook: the check above proves nothing"
  fi
done
/usr/bin/halo lab down >/dev/null 2>&1 && fail "the packaged binary runs halo lab"
[ ! -e /etc/systemd/system/multi-user.target.wants/halo.service ] || fail "the package enabled the service"
dpkg-deb -I "$deb" postinst >/dev/null || fail "the package has no postinst"

# A package upgrade (dpkg -i of the package over itself) with halo running: the postinst hands
# the daemon over. The test's daemon serves on loopback only and is ended by its pid.
[ -e /etc/halo/halo.toml ] && fail "/etc/halo/halo.toml exists; not touching it"
if [ -s /run/halo/halo.pid ] && kill -0 "$(cat /run/halo/halo.pid)" 2>/dev/null; then
  fail "/run/halo/halo.pid names a running process (a halo runs here); not touching it"
fi
mkdir -p /etc/halo
cat >/etc/halo/halo.toml <<'TOML'
[status]
listen = "127.0.0.1:19472"

[[frontend]]
name = "api"
bind = ["127.0.0.1:19471"]
backend = "api"

[[backend]]
name = "api"
[backend.health]
kind = "tcp"
[[backend.server]]
name = "none"
address = "127.0.0.1:9"
TOML
/usr/bin/halo run -c /etc/halo/halo.toml --pid-file /run/halo/halo.pid </dev/null >target/package-halo.log 2>&1 &
first=$!
# The daemons this test started: the first, and the one it handed over to (named by the pid
# file, or by the first one's log should the pid file be gone).
successor() { sed -n 's/.*the new process has taken over pid=\([0-9]*\).*/\1/p' target/package-halo.log | tail -1; }
cleanup_daemon() {
  for pid in "$first" "$(cat /run/halo/halo.pid 2>/dev/null || true)" "$(successor)"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  rm -f /etc/halo/halo.toml
  rmdir /etc/halo 2>/dev/null || true
}
trap 'cleanup_daemon; dpkg -P halo >/dev/null 2>&1 || true' EXIT
for _ in $(seq 50); do [ "$(cat /run/halo/halo.pid 2>/dev/null)" = "$first" ] && break; sleep 0.1; done
[ "$(cat /run/halo/halo.pid 2>/dev/null)" = "$first" ] || fail "the daemon did not start: $(cat target/package-halo.log)"
out=$(dpkg -i "$deb" 2>&1) || fail "dpkg -i over the installed package: $out"
echo "$out" | grep -q "now runs the new binary" || fail "the postinst did not hand over: $out"
second=$(cat /run/halo/halo.pid 2>/dev/null) || fail "no pid file after the handover (successor $(successor)): $(ls -la /run/halo 2>&1) $(cat target/package-halo.log)"
[ "$second" != "$first" ] && kill -0 "$second" || fail "no new daemon after the upgrade: $(cat target/package-halo.log)"
[ "$(readlink "/proc/$second/exe")" = /usr/bin/halo ] || fail "the new daemon does not run /usr/bin/halo"
kill -TERM "$second"
for _ in $(seq 100); do kill -0 "$second" 2>/dev/null || break; sleep 0.1; done
kill -0 "$second" 2>/dev/null && fail "the upgraded daemon did not stop"
cleanup_daemon
trap 'dpkg -P halo >/dev/null 2>&1 || true' EXIT

dpkg -P halo >/dev/null
[ ! -e /usr/bin/halo ] && [ ! -e /usr/bin/halo-guard ] || fail "purge left /usr/bin/halo or /usr/bin/halo-guard"
trap - EXIT
echo "package: ok (installed with dpkg -i, version, unit verified, completions, man page, example config, no lab; a running halo handed over by the postinst of a reinstall; purged)"
