"""Bad media through the worker: each case ends in one terminal state with a stable code (or
succeeds with what it honestly holds), never a retry loop or a stuck job. The intake's cases
(empty upload, larger than declared, wrong content type) are in test_intake / test_bad_input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from batchscribe.models import Job, JobStatus
from batchscribe.repository import JobRepository
from gpu_container.worker.engines import Engine
from harness.audio import SHORT_TEXT, convert, speak
from tests.conftest import Stack
from tests.helpers import call
from tests.integration.workers import make_worker, queue_counts, s3_text, submit

pytestmark = pytest.mark.slow


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    wav = speak(SHORT_TEXT, d / "speech.wav")
    mp3 = convert(wav, d / "speech.mp3")
    truncated = d / "truncated.mp3"
    truncated.write_bytes(mp3.read_bytes()[: mp3.stat().st_size // 2])
    text = d / "notes.wav"
    text.write_text("this is a text file, not a recording\n" * 50)
    silence = d / "silence.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "20", str(silence))
    video = d / "video.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=2:size=64x64:rate=5", "-pix_fmt", "yuv420p", str(video))
    # a decompression bomb: a few KB that decode to ten minutes of samples
    bomb = d / "bomb.ogg"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "600", "-c:a", "libvorbis", "-q:a", "0", str(bomb))
    return {"truncated": truncated, "text": text, "silence": silence, "video": video, "bomb": bomb, "speech": mp3}


def run_one(aws_stack: Stack, engines: dict[str, Engine], job_id: str) -> Job:
    """One worker takes the one job waiting and ends; the job's record after it."""
    make_worker(aws_stack, engines["faster-whisper"], max_jobs=1).run()
    return JobRepository(aws_stack.table).get(job_id)


def test_a_text_file_named_wav_fails_invalid_media(
    aws_stack: Stack, media: dict[str, Path], engines: dict[str, Engine]
) -> None:
    job_id = submit(aws_stack, media["text"])
    job = run_one(aws_stack, engines, job_id)
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == "invalid_media"
    assert queue_counts(aws_stack) == (0, 0)


def test_a_truncated_mp3_transcribes_what_it_holds(
    aws_stack: Stack, media: dict[str, Path], engines: dict[str, Engine]
) -> None:
    job_id = submit(aws_stack, media["truncated"], "audio/mpeg")
    job = run_one(aws_stack, engines, job_id)
    assert job.status is JobStatus.SUCCEEDED and job.result is not None
    full = media["speech"]
    assert 0 < job.result.duration_seconds < 0.75 * float(_seconds(full))  # about half of it
    assert s3_text(aws_stack, job.result.outputs["txt"]).strip()


def test_silence_succeeds_with_an_empty_transcript(
    aws_stack: Stack, media: dict[str, Path], engines: dict[str, Engine]
) -> None:
    job_id = submit(aws_stack, media["silence"])
    job = run_one(aws_stack, engines, job_id)
    assert job.status is JobStatus.SUCCEEDED and job.result is not None
    assert job.result.segments == 0 and abs(job.result.duration_seconds - 20) < 0.5
    assert s3_text(aws_stack, job.result.outputs["txt"]) == ""


def test_a_video_without_audio_fails_no_audio(
    aws_stack: Stack, media: dict[str, Path], engines: dict[str, Engine]
) -> None:
    job_id = submit(aws_stack, media["video"], "video/mp4")
    make_worker(aws_stack, engines["faster-whisper"], max_jobs=1).run()
    _, job = call("GET", f"/jobs/{job_id}")
    assert (job["status"], job["error"]["code"]) == ("failed", "no_audio")


def test_a_decompression_bomb_is_stopped_by_the_duration_limit(
    aws_stack: Stack, media: dict[str, Path], engines: dict[str, Engine]
) -> None:
    """A few KB of Vorbis that decode to ten minutes: refused as too long, in bounded memory
    (the audio is decoded in blocks; the limit is checked against the header, then the samples)."""
    assert media["bomb"].stat().st_size < 200_000
    job_id = submit(aws_stack, media["bomb"], "audio/ogg")
    make_worker(aws_stack, engines["faster-whisper"], max_jobs=1, max_duration_seconds=120).run()
    _, job = call("GET", f"/jobs/{job_id}")
    assert (job["status"], job["error"]["code"]) == ("failed", "too_long")
    assert queue_counts(aws_stack) == (0, 0)


def test_an_input_deleted_after_intake_fails_input_missing(
    aws_stack: Stack, media: dict[str, Path], engines: dict[str, Engine]
) -> None:
    import boto3

    job_id = submit(aws_stack, media["speech"], "audio/mpeg")
    record = JobRepository(aws_stack.table).get(job_id)
    boto3.client("s3").delete_object(Bucket=aws_stack.bucket, Key=record.input.key)
    job = run_one(aws_stack, engines, job_id)
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == "input_missing"
    assert job.attempt == 1 and queue_counts(aws_stack) == (0, 0)  # failed at once, not retried


def _seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        return float(container.duration or 0) / 1_000_000


def test_an_input_replaced_behind_intakes_back_fails_input_changed(
    aws_stack: Stack, media: dict[str, Path], engines: dict[str, Engine]
) -> None:
    """Intake pins the object it checked (`input.etag`); a second upload whose event intake
    never saw (lost, or not yet handled) must not be what the worker transcribes: its
    download is conditional on the pinned ETag and the job fails `input_changed`."""
    import boto3

    job_id = submit(aws_stack, media["speech"], "audio/mpeg")
    record = JobRepository(aws_stack.table).get(job_id)
    assert record.input.etag
    boto3.client("s3").put_object(Bucket=aws_stack.bucket, Key=record.input.key, Body=media["text"].read_bytes())
    job = run_one(aws_stack, engines, job_id)
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == "input_changed"
    assert job.attempt == 1 and queue_counts(aws_stack) == (0, 0)
