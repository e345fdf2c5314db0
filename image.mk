# Worker images, built with podman (no Docker daemon needed) from gpu_container/Dockerfile.
# Included by the Makefile (`include image.mk`, after its first target, so that the default
# goal stays the same); also works alone: `make -f image.mk image`.
# The scripts install podman & co. with apt when missing and build on an offline Debian base
# (scripts/image/base.sh), baking tiny.en unless MODEL is given (`make image MODEL=small`
# needs Hugging Face reachable).

SHELL := /bin/bash

.PHONY: image image-gpu image-openai-whisper image-smoke image-gpu-smoke lint-docker

IMAGE_HADOLINT ?= .venv/bin/hadolint

# localhost/batchscribe-worker:cpu (faster-whisper, CPU)
image:
	scripts/image/build.sh cpu

# localhost/batchscribe-worker:gpu (faster-whisper, CUDA 12 cuBLAS + cuDNN 9 wheels)
image-gpu:
	scripts/image/build.sh gpu

# localhost/batchscribe-worker:cpu-openai-whisper (torch from PyTorch's index: TORCH_INDEX_URL
# must point at a reachable one where download.pytorch.org is not)
image-openai-whisper:
	scripts/image/build.sh cpu openai-whisper

# The built image, run for real: its user, model and libraries (smoke.sh), then the local
# stack with its workers started from the image (podman, host network) taking jobs from the
# local queue and committing their transcripts (tests/image).
image-smoke: image
	scripts/image/smoke.sh cpu
	source scripts/image/podman-env.sh && .venv/bin/python -m pytest -q -p no:cacheprovider tests/image \
	  --worker-image localhost/batchscribe-worker:cpu

image-gpu-smoke: image-gpu
	scripts/image/smoke.sh gpu

lint-docker:
	@test -x $(IMAGE_HADOLINT) || { echo "$(IMAGE_HADOLINT) is missing: run make venv" >&2; exit 1; }
	$(IMAGE_HADOLINT) gpu_container/Dockerfile
