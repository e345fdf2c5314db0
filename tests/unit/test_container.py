"""The image runs what the tests ran: same requirement files, non-root, worker entrypoint."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "gpu_container" / "Dockerfile").read_text()


def test_image_installs_the_requirement_files_the_tests_install() -> None:
    assert "COPY gpu_container/requirements.txt gpu_container/requirements-nodeps.txt" in DOCKERFILE
    assert "pip install -r /tmp/req/requirements.txt" in DOCKERFILE
    assert "--no-deps -r /tmp/req/requirements-nodeps.txt" in DOCKERFILE
    top = (ROOT / "requirements.txt").read_text()
    assert "-r gpu_container/requirements.txt" in top
    assert "requirements-nodeps.txt" in (ROOT / "Makefile").read_text()


def test_every_worker_requirement_is_pinned() -> None:
    for line in (ROOT / "gpu_container" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.+]*", line), line


def test_image_is_cuda_with_cudnn_non_root_and_runs_the_worker() -> None:
    assert re.search(r"ARG BASE=nvidia/cuda:12\.[0-9.]+-cudnn-runtime", DOCKERFILE)
    assert "USER 10001" in DOCKERFILE
    assert 'ENTRYPOINT ["python", "-m", "gpu_container.worker"]' in DOCKERFILE
    assert "ARG MODEL=" in DOCKERFILE and "gpu_container.worker.bake" in DOCKERFILE


def test_lambda_requirements_keep_torch_out() -> None:
    text = (ROOT / "lambdas" / "requirements.txt").read_text().lower()
    assert "torch" not in text and "whisper" not in text
