#!/usr/bin/env bash
# Builds halo's container image, localhost/halo:VERSION, offline and reproducibly, and exports
# it as an OCI archive that `podman load` and `ctr -n k8s.io images import` take. Prints the
# archive's path last.
#
#   scripts/image.sh [--output FILE]
#
# The image is FROM scratch (no base image, no registry): the release halo and halo-guard, the
# C library they link (copied from this Debian host's libc6 and libgcc-s1), tini as PID 1 (it
# reaps the orphans of scripts and passes signals on to halo), busybox as /bin/sh and the small
# tools scripts use, CA certificates, nsswitch.conf (files, then DNS), and a passwd/group that
# know root and nobody. halo calls no `ip`. Every file and the image's dates are those of
# SOURCE_DATE_EPOCH (the last commit's time unless set), so two builds of one commit give one
# digest — on one build host: the digest also depends on the checkout's path (the binary holds
# source paths), the toolchain, and the versions of this host's libc6, busybox-static, tini and
# ca-certificates (whose bundle, local additions included, goes in). The busybox applets linked
# here are the programs `halo render static-pod|quadlet` knows the image has
# (halo_config::render::IMAGE_PROGRAMS). buildah's storage is a directory of its own under
# target/, removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

output=
while [ $# -gt 0 ]; do
  case "$1" in
    --output) output="$2"; shift 2 ;;
    *) echo "image.sh: unknown argument $1 (usage: scripts/image.sh [--output FILE])" >&2; exit 2 ;;
  esac
done
for tool in buildah tini-static busybox strip; do
  command -v "$tool" >/dev/null || { echo "image.sh: $tool is missing (scripts/setup.sh installs it)" >&2; exit 2; }
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
reference="localhost/halo:$version"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
output="${output:-target/image/halo-$version.oci.tar}"

# The binaries the package ships (no lab).
cargo build --quiet --locked --release -p halo --no-default-features

work=$(mktemp -d "$PWD/target/image-build.XXXXXX")
storage=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
container=
cleanup() {
  [ -n "$container" ] && buildah "${storage[@]}" rm "$container" >/dev/null 2>&1 || true
  buildah "${storage[@]}" rmi --all --force >/dev/null 2>&1 || true
  # vfs layers are plain directories; some hold read-only ones.
  chmod -R u+w "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

root="$work/rootfs"
mkdir -p "$root"/{usr/bin,bin,etc/ssl/certs,tmp,run/halo,etc/halo}
chmod 1777 "$root/tmp"
install -m 0755 target/release/halo target/release/halo-guard "$root/usr/bin/"
# As the packages ship them: without symbols.
strip --strip-unneeded "$root/usr/bin/halo" "$root/usr/bin/halo-guard"
install -m 0755 "$(command -v tini-static)" "$root/usr/bin/tini"
install -m 0755 "$(command -v busybox)" "$root/bin/busybox"
for applet in sh cat echo test [ sleep id kill ls grep sed awk head tail wc cut tr date printf nc wget true false env; do
  ln -s busybox "$root/bin/$applet"
done
# What the binaries load: the dynamic loader and each library, at the paths ldd names.
for library in $(ldd target/release/halo target/release/halo-guard | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u); do
  mkdir -p "$root$(dirname "$library")"
  install -m 0755 "$(readlink -f "$library")" "$root$library"
done
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
# One date for every file, and a fixed order in the layer.
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

container=$(buildah "${storage[@]}" from --quiet scratch)
buildah "${storage[@]}" copy --quiet "$container" "$root/" / >/dev/null
buildah "${storage[@]}" config \
  --entrypoint '["/usr/bin/tini", "--", "/usr/bin/halo"]' \
  --cmd 'run -c /etc/halo/halo.toml --pid-file /run/halo/halo.pid' \
  --env container=oci \
  --label org.opencontainers.image.title=halo \
  --label "org.opencontainers.image.version=$version" \
  --created-by "scripts/image.sh" \
  "$container"
buildah "${storage[@]}" commit --quiet --timestamp "$SOURCE_DATE_EPOCH" --format oci "$container" "$reference" >/dev/null
mkdir -p "$(dirname "$output")"
rm -f "$output"
buildah "${storage[@]}" push --quiet "$reference" "oci-archive:$output:$reference"
echo "image.sh: $reference, $(du -h "$output" | cut -f1) archive, manifest $(tar -xOf "$output" index.json | grep -o 'sha256:[0-9a-f]*' | head -1)" >&2
echo "$output"
