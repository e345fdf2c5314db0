# shellcheck shell=bash
# Podman without a Docker daemon, the way NOTES.md ("Container images") verified it on this
# kind of machine. Source it (`source scripts/image/podman-env.sh`); base.sh and build.sh do.
#
# - installs buildah, podman, fuse-overlayfs, debootstrap and runc with apt when missing;
# - writes .podman/containers.conf (runc, cgroupfs, ulimits the sandbox allows: podman's
#   defaults fail here) and .podman/storage.conf (overlay storage with its own graphroot);
# - exports CONTAINERS_CONF and CONTAINERS_STORAGE_CONF, so plain `podman` commands in the
#   same shell use them.
#
# The image store is outside the working tree (BATCHSCRIBE_PODMAN_STORE, default
# /var/tmp/batchscribe-podman): gigabytes of image layers full of Python files must not be
# walked by mypy, ruff, pytest or CDK asset staging. Podman runs as root (sudo otherwise).

_image_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PODMAN_CONF_DIR="${PODMAN_CONF_DIR:-$_image_root/.podman}"
BATCHSCRIBE_PODMAN_STORE="${BATCHSCRIBE_PODMAN_STORE:-/var/tmp/batchscribe-podman}"
BASE_IMAGE="${BASE_IMAGE:-localhost/debian-base:bookworm}"
export PODMAN_CONF_DIR BATCHSCRIBE_PODMAN_STORE BASE_IMAGE

# Root runs things directly, anyone else through sudo (apt, debootstrap, podman).
if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo "--preserve-env=CONTAINERS_CONF,CONTAINERS_STORAGE_CONF"); fi

_image_missing=()
for _tool in buildah podman fuse-overlayfs debootstrap runc; do
  command -v "$_tool" >/dev/null 2>&1 || _image_missing+=("$_tool")
done
# debootstrap needs Debian's archive key to check bookworm (an Ubuntu host may lack it).
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || _image_missing+=(debian-archive-keyring)
if [ "${#_image_missing[@]}" -gt 0 ]; then
  echo "installing ${_image_missing[*]} (apt)" >&2
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${_image_missing[@]}" >/dev/null
fi
unset _tool _image_missing

mkdir -p "$PODMAN_CONF_DIR"
cat >"$PODMAN_CONF_DIR/containers.conf" <<CONF
# Written by scripts/image/podman-env.sh. crun refuses this machine's hybrid cgroup tree and
# podman's default ulimits exceed what the sandbox allows.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
cat >"$PODMAN_CONF_DIR/storage.conf" <<CONF
# Written by scripts/image/podman-env.sh. overlay: ~2x faster builds than vfs, containers
# start in 0.5 s instead of 10+ s. Its own graphroot, outside the working tree.
[storage]
driver = "overlay"
graphroot = "$BATCHSCRIBE_PODMAN_STORE/storage"
runroot = "$BATCHSCRIBE_PODMAN_STORE/run"
CONF
export CONTAINERS_CONF="$PODMAN_CONF_DIR/containers.conf"
export CONTAINERS_STORAGE_CONF="$PODMAN_CONF_DIR/storage.conf"

# podman as root with this configuration, from scripts and from an interactive shell alike.
podman() {
  if [ "${#SUDO[@]}" -gt 0 ]; then "${SUDO[@]}" podman "$@"; else command podman "$@"; fi
}

# The Debian mirror (and security mirror) this machine's apt uses, from sources.list(.d).
# $1: "debian" or "security". DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR override.
debian_mirror() {
  local want="$1" uri
  uri="$(
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
      awk -v want="$want" '
        function pick(uris, suites,   n, u, i) {
          if (want == "security" ? suites ~ /(^| )bookworm-security( |$)/ : suites ~ /(^| )bookworm( |$)/) {
            n = split(uris, u, " ")
            for (i = 1; i <= n; i++) if (u[i] ~ /^https?:/) { print u[i]; exit }
          }
        }
        /^[ \t]*deb[ \t]/ {                          # one-line format: deb [opts] URI suite comp...
          sub(/\[[^]]*\][ \t]*/, "")
          pick($2, $3)
        }
        /^URIs:/   { uris = $0; sub(/^URIs:[ \t]*/, "", uris) }      # deb822 format
        /^Suites:/ { suites = $0; sub(/^Suites:[ \t]*/, "", suites) }
        /^[ \t]*$/ { if (uris != "") pick(uris, suites); uris = ""; suites = "" }
        END        { if (uris != "") pick(uris, suites) }
      ' | head -n 1
  )"
  if [ "$want" = security ]; then
    echo "${DEBIAN_SECURITY_MIRROR:-${uri:-http://deb.debian.org/debian-security}}"
  else
    echo "${DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
  fi
}
