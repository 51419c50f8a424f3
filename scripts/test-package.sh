#!/usr/bin/env bash
# Installs the .deb with dpkg -i (root), checks what it installed, and purges it again:
# `halo --version`, `systemd-analyze verify` on the unit, completions, man page, example config,
# and that nothing was enabled or started. Exit 0 when all hold.
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
/usr/bin/halo lab down >/dev/null 2>&1 && fail "the packaged binary runs halo lab"
[ ! -e /etc/systemd/system/multi-user.target.wants/halo.service ] || fail "the package enabled the service"
dpkg -P halo >/dev/null
[ ! -e /usr/bin/halo ] && [ ! -e /usr/bin/halo-guard ] || fail "purge left /usr/bin/halo or /usr/bin/halo-guard"
trap - EXIT
echo "package: ok (installed with dpkg -i, version, unit verified, completions, man page, example config, no lab; purged)"
