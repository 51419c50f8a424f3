#!/usr/bin/env bash
# Installs the .deb with dpkg -i (root), checks what it installed, and purges it again:
# `halo --version`, `systemd-analyze verify` on the unit, completions, man page, example config,
# that nothing was enabled or started, and the postinst of a package upgrade: a halo running from
# the package (on loopback) hands over to the reinstalled binary (`halo upgrade`). Then the RPM
# (scripts/rpm.sh, from the same binaries and assets): its file list and %post, an install into a
# scratch root (never the host's rpm database), and its %post run against a daemon. Exit 0 when
# all hold.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/loopback-config.sh
. scripts/loopback-config.sh
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
dpkg-deb -I "$deb" prerm | grep -qF 'systemctl --no-reload disable --now halo.service' || fail "the package's prerm does not stop halo"

# A package upgrade (dpkg -i of the package over itself) with halo running: the postinst hands
# the daemon over. The test's daemon serves on loopback only and is ended by its pid.
[ -e /etc/halo/halo.toml ] && fail "/etc/halo/halo.toml exists; not touching it"
if [ -s /run/halo/halo.pid ] && kill -0 "$(cat /run/halo/halo.pid)" 2>/dev/null; then
  fail "/run/halo/halo.pid names a running process (a halo runs here); not touching it"
fi
mkdir -p /etc/halo
loopback_config 127.0.0.1:19472 127.0.0.1:19471 >/etc/halo/halo.toml
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

# The RPM (packaging/rpm/halo.spec, built by scripts/rpm.sh from the same binaries and assets):
# its file list and scriptlets, read from the package; installed into a scratch root with an rpm
# database of its own (the host's, if any, is left alone), its binary run there; and its %post
# run against a daemon started from the scratch root: nothing on a first install ($1 = 1), the
# handover on an upgrade ($1 = 2). The daemon serves on loopback only and is ended by its pid.
host_rpmdb=$(rpm --eval '%_dbpath')
host_rpmdb_existed=$([ -e "$host_rpmdb" ] && echo yes || echo no)
rpm_pkg=$(scripts/rpm.sh | tail -1)
echo "package: $rpm_pkg ($(du -h "$rpm_pkg" | cut -f1))"
scratch=$(mktemp -d /tmp/halo-rpm.XXXXXX)
rpm_daemons=()
cleanup_rpm() {
  for pid in "${rpm_daemons[@]}" "$(cat "$scratch/run/halo/halo.pid" 2>/dev/null || true)"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  rm -rf "$scratch"
}
trap cleanup_rpm EXIT
scratch_rpm() { rpm --root "$scratch" --dbpath /var/lib/rpm "$@"; }
expected_files='/usr/bin/halo
/usr/bin/halo-guard
/usr/lib/systemd/system/halo.service
/usr/share/bash-completion/completions/halo
/usr/share/doc/halo
/usr/share/doc/halo/README.md
/usr/share/doc/halo/config.md
/usr/share/doc/halo/examples
/usr/share/doc/halo/examples/halo.toml
/usr/share/fish/vendor_completions.d/halo.fish
/usr/share/man/man1/halo.1.gz
/usr/share/zsh/site-functions/_halo'
files=$(scratch_rpm -qlp "$rpm_pkg") || fail "rpm -qlp $rpm_pkg"
[ "$files" = "$expected_files" ] || fail "rpm -qlp: unexpected file list: $(diff <(echo "$expected_files") <(echo "$files"))"
scripts=$(scratch_rpm -qp --scripts "$rpm_pkg") || fail "rpm -qp --scripts $rpm_pkg"
[ "$(echo "$scripts" | grep -c 'scriptlet')" -eq 2 ] && echo "$scripts" | grep -q '^postinstall scriptlet' &&
  echo "$scripts" | grep -q '^preuninstall scriptlet' || fail "the RPM should have a %post and a %preun and no other scriptlet: $scripts"
echo "$scripts" | grep -qF 'systemctl --no-reload disable --now halo.service' || fail "the RPM's %preun does not stop halo: $scripts"
for line in 'pid_file=/run/halo/halo.pid' 'config=/etc/halo/halo.toml' 'if [ "$1" -ge 2 ] &&' \
  'if /usr/bin/halo upgrade -c "$config" --pid-file "$pid_file"; then'; do
  echo "$scripts" | grep -qF -- "$line" || fail "the RPM's %post lacks '$line': $scripts"
done
install_opts=(--nodeps --noscripts --notriggers)
# Debian's rpm warns before installing anything unless told it is meant.
rpm --help 2>/dev/null | grep -q -- --force-debian && install_opts+=(--force-debian)
scratch_rpm --initdb || fail "rpm --initdb in $scratch"
out=$(scratch_rpm "${install_opts[@]}" -i "$rpm_pkg" 2>&1) || fail "rpm -i into $scratch: $out"
scratch_rpm -q halo >/dev/null || fail "the scratch root's rpm database does not list halo"
for f in $expected_files; do
  [ -e "$scratch$f" ] || fail "the RPM did not install $f"
done
[ -x "$scratch/usr/bin/halo" ] && [ -x "$scratch/usr/bin/halo-guard" ] || fail "the RPM's binaries are not executable"
version=$("$scratch/usr/bin/halo" --version) || fail "the RPM's halo --version"
[ "$version" = "halo $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ] || fail "the RPM's halo: unexpected version: $version"
"$scratch/usr/bin/halo" --help | grep -qw lab && fail "the RPM's binary offers halo lab"
# The same unit, completions, docs and man page as the .deb.
for pair in usr/lib/systemd/system/halo.service:target/assets/halo.service \
  usr/share/bash-completion/completions/halo:target/assets/halo.bash \
  usr/share/zsh/site-functions/_halo:target/assets/_halo \
  usr/share/fish/vendor_completions.d/halo.fish:target/assets/halo.fish \
  usr/share/doc/halo/examples/halo.toml:examples/halo.toml \
  usr/share/doc/halo/README.md:README.md usr/share/doc/halo/config.md:docs/config.md; do
  cmp -s "$scratch/${pair%%:*}" "${pair#*:}" || fail "the RPM's /${pair%%:*} differs from ${pair#*:}"
done
cmp -s <(zcat "$scratch/usr/share/man/man1/halo.1.gz") <(zcat target/assets/halo.1.gz) || fail "the RPM's man page differs from target/assets/halo.1.gz"
"$scratch/usr/bin/halo" check -c "$scratch/usr/share/doc/halo/examples/halo.toml" >/dev/null 2>&1 ||
  fail "the RPM's example does not pass halo check"

# Its %post, with /usr/bin/halo, /etc/halo and /run/halo moved into the scratch root.
post=$(scratch_rpm -qp --qf '%{POSTIN}' "$rpm_pkg") || fail "rpm -qp --qf %{POSTIN}"
post=$(echo "$post" | sed -e "s#/usr/bin/halo#$scratch/usr/bin/halo#g" -e "s#/etc/halo/#$scratch/etc/halo/#g" -e "s#/run/halo/#$scratch/run/halo/#g")
echo "$post" | grep -qE '(^|[ ="])/(usr/bin|etc|run)/halo' && fail "the %post names a path this test did not move: $post"
mkdir -p "$scratch/etc/halo" "$scratch/run/halo"
loopback_config 127.0.0.1:19474 127.0.0.1:19473 >"$scratch/etc/halo/halo.toml"
log=target/package-rpm-halo.log
"$scratch/usr/bin/halo" run -c "$scratch/etc/halo/halo.toml" --pid-file "$scratch/run/halo/halo.pid" </dev/null >"$log" 2>&1 &
first=$!
rpm_daemons+=("$first")
for _ in $(seq 50); do [ "$(cat "$scratch/run/halo/halo.pid" 2>/dev/null)" = "$first" ] && break; sleep 0.1; done
[ "$(cat "$scratch/run/halo/halo.pid" 2>/dev/null)" = "$first" ] || fail "the RPM's daemon did not start: $(cat "$log")"
out=$(sh -c "$post" halo-post 1 2>&1) || fail "the %post of a first install failed: $out"
[ -z "$out" ] || fail "the %post of a first install did something: $out"
[ "$(cat "$scratch/run/halo/halo.pid")" = "$first" ] || fail "the %post of a first install touched the running daemon"
out=$(sh -c "$post" halo-post 2 2>&1) || fail "the %post of an upgrade failed: $out"
echo "$out" | grep -q "now runs the new binary" || fail "the %post of an upgrade did not hand over: $out $(cat "$log")"
second=$(cat "$scratch/run/halo/halo.pid" 2>/dev/null) || fail "no pid file after the RPM's handover: $(cat "$log")"
rpm_daemons+=("$second")
[ "$second" != "$first" ] && kill -0 "$second" || fail "no new daemon after the RPM's %post: $(cat "$log")"
[ "$(readlink "/proc/$second/exe")" = "$scratch/usr/bin/halo" ] || fail "the new daemon does not run the RPM's halo"
kill -TERM "$second"
for _ in $(seq 100); do kill -0 "$second" 2>/dev/null || break; sleep 0.1; done
kill -0 "$second" 2>/dev/null && fail "the RPM's upgraded daemon did not stop"
cleanup_rpm
trap - EXIT
if [ "$host_rpmdb_existed" = no ] && [ -e "$host_rpmdb" ]; then
  fail "the test created the host's rpm database $host_rpmdb"
fi
echo "package: ok (deb: installed with dpkg -i, version, unit verified, completions, man page, example config, no lab; a running halo handed over by the postinst of a reinstall; purged. rpm: file list, the upgrade handover in its %post, installed into a scratch root, version, the same files; its %post run against a daemon: nothing on a first install, the handover on an upgrade)"
