"""The worker image, run for real: the local stack starts its workers from the built image
(podman, host network) instead of this checkout, and a job goes through the whole pipeline.
`make image-smoke` builds the image and runs these with --worker-image; elsewhere they are
deselected."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import jiwer
import pytest

from batchscribe_cli.cli import SAMPLE, SAMPLE_TEXT
from batchscribe_cli.client import Client
from batchscribe_cli.local import LocalStack
from harness.audio import SHORT_TEXT, speak, spoken_words
from tests.e2e.waits import running_stack

pytestmark = [pytest.mark.image, pytest.mark.slow]


@pytest.fixture(scope="module")
def image(pytestconfig: pytest.Config) -> str:
    name = str(pytestconfig.getoption("--worker-image"))
    user = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Config.User}}", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert user == "10001", f"{name} runs as {user!r}, not its non-root user"
    return name


@pytest.fixture(scope="module")
def stack(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from running_stack(tmp_path_factory, name="image-stack", idle_exit_seconds=15, worker_image=image)


def test_the_image_takes_a_job_from_the_local_queue_and_commits_its_transcript(
    stack: LocalStack, tmp_path: Path
) -> None:
    """Given the local stack with workers from the image, when the bundled sample (mp3) and a
    spoken wav are submitted, then both succeed once, with the image's model, as uid 10001."""
    client = Client(stack.url, owner="image-smoke")
    wav = speak(SHORT_TEXT, tmp_path / "short.wav")
    jobs = [client.submit(SAMPLE, {"language": "en"}), client.submit(wav, {"language": "en"})]
    done = [client.wait(job["job_id"], timeout=300) for job in jobs]

    for job in done:
        assert job["status"] == "succeeded", job
        assert job["attempt"] == 1
        assert (job["result"]["engine"], job["result"]["model"]) == ("faster-whisper", "tiny.en")
    sample_text = client.result_text(done[0], "txt")
    assert jiwer.wer(spoken_words(SAMPLE_TEXT), spoken_words(sample_text)) < 0.25, sample_text
    assert jiwer.wer(spoken_words(SHORT_TEXT), spoken_words(client.result_text(done[1], "txt"))) < 0.3
    srt = client.result_text(done[0], "srt")
    assert srt.startswith("1\n00:00:00") and "-->" in srt

    assert stack.compute is not None and stack.compute.started >= 1
    logs = "".join(p.read_text() for p in (stack.config.data_dir / "workers").glob("*.log"))
    started = [json.loads(line) for line in logs.splitlines() if '"worker started"' in line]
    assert started and all(entry["uid"] == 10001 for entry in started), started


def test_workers_from_the_image_exit_when_idle(stack: LocalStack) -> None:
    """Scale to zero: the container exits by itself after the idle period."""
    assert stack.compute is not None
    deadline = time.monotonic() + 60
    while stack.compute.active(stack.pool) and time.monotonic() < deadline:
        time.sleep(1)
    assert stack.compute.active(stack.pool) == 0
