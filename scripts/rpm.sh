#!/usr/bin/env bash
# Builds the RPM (packaging/rpm/halo.spec) from binaries built beforehand: target/release/halo and
# target/release/halo-guard (scripts/package.sh builds them, as does
# `cargo build --release --locked -p halo --no-default-features`), the assets scripts/assets.sh
# generates from that binary into target/assets, the example config and the docs. No compiler
# runs inside rpmbuild; the package holds the same files as the .deb. The version is Cargo.toml's.
# Dates in the package come from SOURCE_DATE_EPOCH, by default the last commit's time.
# Prints the .rpm's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "rpm.sh: $*" >&2; exit 1; }
command -v rpmbuild >/dev/null || fail "no rpmbuild (Debian: the rpm package; ALT, Fedora: rpm-build)"
command -v strip >/dev/null || fail "no strip (binutils)"
for bin in target/release/halo target/release/halo-guard; do
  [ -x "$bin" ] || fail "$bin missing: build it first (scripts/package.sh, or cargo build --release --locked -p halo --no-default-features)"
done
version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
[ -n "$version" ] || fail "no version under [workspace.package] in Cargo.toml"
built=$(target/release/halo --version) || fail "target/release/halo --version failed"
[ "$built" = "halo $version" ] || fail "target/release/halo says '$built', Cargo.toml says $version: rebuild it"
scripts/assets.sh

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || true)
fi
export SOURCE_DATE_EPOCH
reproducible=()
if [ -n "$SOURCE_DATE_EPOCH" ]; then
  reproducible=(--define "use_source_date_epoch_as_buildtime 1" --define "clamp_mtime_to_source_date_epoch 1")
else
  unset SOURCE_DATE_EPOCH
fi

topdir=$PWD/target/rpm
rm -rf "$topdir"
mkdir -p "$topdir/SOURCES"
cp target/release/halo target/release/halo-guard \
  target/assets/halo.service target/assets/halo.bash target/assets/_halo target/assets/halo.fish \
  target/assets/halo.1.gz examples/halo.toml README.md docs/config.md "$topdir/SOURCES/"
# Stripped here as cargo-deb strips the .deb's, whatever the distribution's rpmbuild would do
# (Debian's strips debug sections only, and only if file(1) is installed).
strip --strip-unneeded "$topdir/SOURCES/halo" "$topdir/SOURCES/halo-guard"
# --nodeps: the spec has no build dependencies, and rpmbuild then leaves the host's rpm database
# alone (on Debian there is none to check against).
if ! rpmbuild -bb --nodeps \
  --define "_topdir $topdir" \
  --define "_sourcedir $topdir/SOURCES" \
  --define "halo_version $version" \
  "${reproducible[@]}" \
  packaging/rpm/halo.spec >"$topdir/build.log" 2>&1; then
  cat "$topdir/build.log" >&2
  fail "rpmbuild failed (log above, also in $topdir/build.log)"
fi
rpm=$(sed -n 's/^Wrote: //p' "$topdir/build.log" | tail -1)
[ -f "$rpm" ] || fail "rpmbuild wrote no package: $(cat "$topdir/build.log")"
echo "${rpm#"$PWD"/}"
