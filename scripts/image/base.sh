#!/usr/bin/env bash
# Make the offline Debian bookworm base image, localhost/debian-base:bookworm, once (it is
# skipped when present; FORCE=1 remakes it). No registry is reachable from this kind of
# machine, so instead of pulling debian:bookworm-slim it is bootstrapped from the Debian mirror
# this machine's apt uses (debootstrap --variant=minbase, ~30 s, ~130 MB) and imported.
set -euo pipefail
# shellcheck source=scripts/image/podman-env.sh
source "$(dirname "$0")/podman-env.sh"

if [ "${FORCE:-0}" != 1 ] && podman image exists "$BASE_IMAGE"; then
  echo "$BASE_IMAGE: present"
  exit 0
fi

mirror="$(debian_mirror debian)"
security="$(debian_mirror security)"
rootfs="$BATCHSCRIBE_PODMAN_STORE/rootfs.$$"
"${SUDO[@]}" mkdir -p "$BATCHSCRIBE_PODMAN_STORE"
trap '"${SUDO[@]}" rm -rf "$rootfs"' EXIT

echo "debootstrap bookworm from $mirror" >&2
"${SUDO[@]}" debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
# Like the official image: the release, its updates and its security fixes.
"${SUDO[@]}" tee "$rootfs/etc/apt/sources.list" >/dev/null <<LIST
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
LIST
"${SUDO[@]}" chroot "$rootfs" apt-get clean
"${SUDO[@]}" rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log

# The official image's PATH and CMD (an image without PATH breaks `ENV PATH=...:$PATH`).
"${SUDO[@]}" tar -C "$rootfs" --numeric-owner -c . |
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    - "$BASE_IMAGE" >/dev/null
echo "$BASE_IMAGE: $(podman image inspect --format '{{.Size}}' "$BASE_IMAGE") bytes"
