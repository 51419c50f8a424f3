#!/usr/bin/env bash
# Writes an Ignition config (spec 3.3.0) that installs halo on an ostree host (ALT Container OS,
# Fedora CoreOS) at its first boot: /etc/halo/halo.toml, the Quadlet unit `halo render quadlet`
# writes for it, the image archive scripts/image.sh built (fetched from your provisioning server
# and checked against its SHA-512), and a oneshot unit that loads it into podman before halo
# starts. Other files halo.toml names (a CA, a token) must reach the host too: on a
# control-plane node kubeadm writes /etc/kubernetes/pki; anything else goes into your own
# Ignition config, merged with this one.
#
#   scripts/ignition.sh -c halo.toml --image target/image/halo-VERSION.oci.tar \
#       --image-url https://provisioning.internal/halo-VERSION.oci.tar > halo.ign
#
# halo is the binary on PATH, or HALO=/path/to/halo. Validate with `ignition-validate halo.ign`.
set -euo pipefail

config= image= url=
while [ $# -gt 0 ]; do
  case "$1" in
    -c) config="$2"; shift 2 ;;
    --image) image="$2"; shift 2 ;;
    --image-url) url="$2"; shift 2 ;;
    *) echo "ignition.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$config" ] || [ -z "$image" ] || [ -z "$url" ]; then
  echo "usage: scripts/ignition.sh -c halo.toml --image ARCHIVE --image-url URL" >&2
  exit 2
fi
case "$url" in
  *'"'* | *\\* | *[[:space:]]*) echo "ignition.sh: --image-url holds a quote, a backslash or white space" >&2; exit 2 ;;
  http://* | https://* | s3://* | gs://* | tftp://*) ;;
  *) echo "ignition.sh: --image-url must be a URL Ignition fetches (https://, http://, s3://, gs://, tftp://)" >&2; exit 2 ;;
esac
halo="${HALO:-halo}"
# The config must load: the Quadlet unit is rendered from it, and its warnings are shown.
quadlet=$("$halo" render quadlet -c "$config")
version=$("$halo" --version | cut -d' ' -f2)
archive="/var/lib/halo/halo-$version.oci.tar"
# The archive must hold the image the quadlet names, or podman would try to pull it.
reference="localhost/halo:$version"
if ! tar -xOf "$image" index.json 2>/dev/null | grep -qF "\"org.opencontainers.image.ref.name\":\"$reference\""; then
  echo "ignition.sh: $image does not hold $reference (scripts/image.sh of this version builds it)" >&2
  exit 2
fi
sha512=$(sha512sum "$image" | cut -d' ' -f1)

data() { printf 'data:;base64,%s' "$(base64 -w0)"; }
# A unit's text as a JSON string: it holds no quote, backslash or control character but newlines.
json_text() { sed -e ':a' -e 'N' -e '$!ba' -e 's/\n/\\n/g'; }

loader=$(cat <<UNIT | json_text
[Unit]
Description=Load halo's image ($version) into podman
Before=halo.service
ConditionPathExists=$archive

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/podman load --quiet --input $archive

[Install]
WantedBy=multi-user.target
UNIT
)
needs_image=$(printf '[Unit]\nRequires=halo-image.service\nAfter=halo-image.service\n' | data)

cat <<JSON
{
  "ignition": { "version": "3.3.0" },
  "storage": {
    "files": [
      { "path": "/etc/halo/halo.toml", "mode": 420, "contents": { "source": "$(data <"$config")" } },
      { "path": "/etc/containers/systemd/halo.container", "mode": 420, "contents": { "source": "$(printf '%s\n' "$quadlet" | data)" } },
      { "path": "/etc/systemd/system/halo.service.d/image.conf", "mode": 420, "contents": { "source": "$needs_image" } },
      { "path": "$archive", "mode": 420, "contents": { "source": "$url", "verification": { "hash": "sha512-$sha512" } } }
    ]
  },
  "systemd": {
    "units": [
      { "name": "halo-image.service", "enabled": true, "contents": "$loader" }
    ]
  }
}
JSON
