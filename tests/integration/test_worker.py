"""The worker against moto with the real tiny.en model on speech made by espeak-ng."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
import jiwer
import pytest

from batchscribe.models import JobMessage, JobStatus
from batchscribe.repository import JobRepository
from gpu_container.worker.engines import Engine
from gpu_container.worker.main import Outcome, Worker
from harness.audio import spoken_words
from tests.conftest import Stack
from tests.helpers import call, create, deliver_uploads, post_upload
from tests.integration.workers import (
    Scripted,
    make_worker,
    queue_counts,
    s3_text,
    submit,
    until_heard,
    worker_settings,
)

pytestmark = pytest.mark.slow

# ---- output validity -------------------------------------------------------------------

_SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
_VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)"


def _secs(m: tuple[str, ...]) -> float:
    h, mi, s, ms = (int(x) for x in m)
    return h * 3600 + mi * 60 + s + ms / 1000


def check_srt(text: str) -> None:
    blocks = [b for b in text.strip().split("\n\n") if b]
    assert blocks
    prev_end = 0.0
    for i, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        assert lines[0] == str(i)
        m = re.fullmatch(f"{_SRT_TIME} --> {_SRT_TIME}", lines[1])
        assert m, lines[1]
        start, end = _secs(m.groups()[:4]), _secs(m.groups()[4:])
        assert prev_end <= start < end
        assert lines[2].strip()
        prev_end = end


def check_vtt(text: str) -> None:
    assert text.startswith("WEBVTT\n\n")
    cues = [c for c in text[len("WEBVTT\n\n") :].strip().split("\n\n") if c]
    assert cues
    prev_end = 0.0
    for cue in cues:
        lines = cue.split("\n")
        m = re.fullmatch(f"{_VTT_TIME} --> {_VTT_TIME}", lines[0])
        assert m, lines[0]
        start, end = _secs(m.groups()[:4]), _secs(m.groups()[4:])
        assert prev_end <= start < end
        prev_end = end


def check_json(text: str) -> dict[str, Any]:
    data = json.loads(text)
    assert data["schema"] == "batchscribe.transcript/1"
    assert data["language"] == "en" and data["duration"] > 0 and data["model"] == "tiny.en"
    assert all(-5 < seg["avg_logprob"] <= 0 and 0 <= seg["no_speech_prob"] <= 1 for seg in data["segments"])
    prev_end = 0.0
    for seg in data["segments"]:
        assert prev_end <= seg["start"] < seg["end"] <= data["duration"] + 0.01
        prev_end = seg["end"]
    return dict(data)


# ---- transcription on the real model ----------------------------------------------------


@pytest.mark.parametrize("engine_name", ["faster-whisper", "openai-whisper"])
@pytest.mark.parametrize(
    ("kind", "content_type"),
    [("wav", "audio/wav"), ("mp3", "audio/mpeg"), ("ogg", "audio/ogg"), ("long", "audio/wav")],
)
def test_worker_transcribes_speech(
    aws_stack: Stack,
    speech: dict[str, tuple[Path, str]],
    engines: dict[str, Engine],
    engine_name: str,
    kind: str,
    content_type: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, spoken = speech[kind]
    job_id = submit(aws_stack, path, content_type)

    assert make_worker(aws_stack, engines[engine_name], max_jobs=1).run() == 0
    # its start line says how it runs the model: faster-whisper on a CPU in two lanes
    (started,) = [r for r in caplog.records if r.getMessage() == "worker started"]
    assert started.__dict__["lanes"] == (min(2, os.cpu_count() or 1) if engine_name == "faster-whisper" else 1)

    _status, job = call("GET", f"/jobs/{job_id}")
    assert job["status"] == "succeeded", job
    assert job["progress"] == 100 and job["attempt"] == 1
    result = job["result"]
    assert result["engine"] == engine_name and result["model"] == "tiny.en"
    assert result["language"] == "en" and result["warnings"] == []  # English speech: nothing to warn of
    assert result["real_time_factor"] > 0 and result["compute_seconds"] > 0
    record = JobRepository(aws_stack.table).get(job_id)
    assert record.result is not None
    outputs = record.result.outputs
    data = check_json(s3_text(aws_stack, outputs["json"]))
    check_srt(s3_text(aws_stack, outputs["srt"]))
    check_vtt(s3_text(aws_stack, outputs["vtt"]))
    txt = s3_text(aws_stack, outputs["txt"])
    error_rate = jiwer.wer(spoken_words(spoken), spoken_words(txt))
    assert error_rate <= 0.3, (error_rate, txt)
    assert spoken_words(data["text"]) == spoken_words(txt)
    log = s3_text(aws_stack, record.log_key or "")
    assert "transcribed" in log and "succeeded" in log
    assert queue_counts(aws_stack) == (0, 0)


def test_word_timestamps_and_selected_formats(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    job_id = submit(aws_stack, speech["wav"][0], word_timestamps=True, formats=["json", "srt"])
    make_worker(aws_stack, engines["faster-whisper"], max_jobs=1).run()
    record = JobRepository(aws_stack.table).get(job_id)
    assert record.result is not None and set(record.result.outputs) == {"json", "srt"}
    data = check_json(s3_text(aws_stack, record.result.outputs["json"]))
    all_words = [w for seg in data["segments"] for w in seg["words"]]
    assert len(all_words) >= 10
    assert all(w["start"] <= w["end"] for w in all_words)


# ---- permanent faults: failed at once, no retry -----------------------------------------


def test_non_english_speech_on_an_english_only_model_succeeds_with_a_warning(
    aws_stack: Stack, engines: dict[str, Engine], tmp_path: Path
) -> None:
    german = speak_in(
        "de",
        # six sentences, not three: the doubtful share comes from the temperature fallback's
        # samples, and over three sentences it fell under a third in about 1 run of 4
        "Das Wetter ist heute sonnig und warm. Wir treffen uns nach dem Mittagessen im Büro. "
        "Bitte schicken Sie mir den Bericht bis Freitag. Der Zug in die Stadt fährt um neun Uhr. "
        "Meine Schwester hat zwei kleine Hunde und eine Katze. Die Bibliothek ist jeden Tag geöffnet.",
        tmp_path / "de.wav",
    )
    job_id = submit(aws_stack, german, "audio/wav")

    assert make_worker(aws_stack, engines["faster-whisper"], max_jobs=1).run() == 0

    _status, job = call("GET", f"/jobs/{job_id}")
    assert job["status"] == "succeeded", job
    [warning] = job["result"]["warnings"]
    assert warning["code"] == "low_confidence"
    assert "tiny.en is an English-only model" in warning["message"] and "multilingual" in warning["message"]


@pytest.mark.parametrize("seconds", [10.0, 0.2])
def test_a_job_with_no_speech_succeeds_with_a_notice(
    aws_stack: Stack, engines: dict[str, Engine], tmp_path: Path, seconds: float
) -> None:
    import subprocess

    silence = tmp_path / "silence.wav"
    source = ["-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", str(seconds)]
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", *source, str(silence)], check=True)
    job_id = submit(aws_stack, silence, "audio/wav")

    assert make_worker(aws_stack, engines["faster-whisper"], max_jobs=1).run() == 0

    _status, job = call("GET", f"/jobs/{job_id}")
    assert job["status"] == "succeeded", job
    assert [w["code"] for w in job["result"]["warnings"]] == ["no_speech"]
    assert "no speech was found" in job["result"]["warnings"][0]["message"]


def test_a_running_job_shows_its_audio_length_and_a_finish_estimate(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    path, _ = speech["long"]  # 60 s: three windows, one a batch
    job_id = submit(aws_stack, path, "audio/wav")
    repo = JobRepository(aws_stack.table)
    seen: list[dict[str, Any]] = []

    def look(_batch: Sequence[Any]) -> None:
        if hook.calls < 2:
            return
        deadline = time.monotonic() + 10  # the heartbeat writes what the first batch did
        while repo.get(job_id).progress == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.append(call("GET", f"/jobs/{job_id}")[1])

    hook = Scripted(engines["faster-whisper"], look)
    make_worker(aws_stack, hook, max_jobs=1, heartbeat_seconds=0.1, batch_size=1).run()

    assert seen, "the job was seen while it ran"
    running = seen[0]
    assert running["status"] == "running" and 0 < running["progress"] < 100
    assert running["input"]["duration_seconds"] == pytest.approx(60, abs=8)
    assert running["estimated_finish_at"] > running["started_at"]
    done = call("GET", f"/jobs/{job_id}")[1]
    assert done["status"] == "succeeded" and done["estimated_finish_at"] is None


def speak_in(voice: str, text: str, out: Path) -> Path:
    import subprocess

    subprocess.run(["espeak-ng", "-v", voice, "-w", str(out), text], check=True, capture_output=True)
    return out


@pytest.mark.parametrize(("kind", "code"), [("corrupt", "invalid_media"), ("empty", "no_audio"), ("video", "no_audio")])
def test_bad_media_fails_without_retry(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine], kind: str, code: str
) -> None:
    content_type = "video/mp4" if kind == "video" else "audio/wav"
    job_id = submit(aws_stack, speech[kind][0], content_type)

    make_worker(aws_stack, engines["faster-whisper"]).run()

    _, job = call("GET", f"/jobs/{job_id}")
    assert job["status"] == "failed"
    assert job["error"]["code"] == code
    assert job["attempt"] == 1
    assert queue_counts(aws_stack) == (0, 0)  # deleted, not left to retry
    assert queue_counts(aws_stack, aws_stack.jobs_dlq_url) == (0, 0)
    assert job["log_url"]


def test_audio_over_the_duration_limit_is_too_long(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    job_id = submit(aws_stack, speech["long"][0])
    make_worker(aws_stack, engines["faster-whisper"], max_duration_seconds=10).run()
    _, job = call("GET", f"/jobs/{job_id}")
    assert (job["status"], job["error"]["code"]) == ("failed", "too_long")


def test_unknown_model_fails_with_unsupported_model(aws_stack: Stack, speech: dict[str, tuple[Path, str]]) -> None:
    job_id = submit(aws_stack, speech["wav"][0], model="large-v9")
    Worker(worker_settings(aws_stack)).run()  # the real loader: no such model, downloads off
    _, job = call("GET", f"/jobs/{job_id}")
    assert (job["status"], job["error"]["code"]) == ("failed", "unsupported_model")


# ---- duplicates, fencing, poison ------------------------------------------------------


def test_duplicate_message_for_a_finished_job_is_deleted_and_nothing_rewritten(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    job_id = submit(aws_stack, speech["wav"][0])
    make_worker(aws_stack, engines["faster-whisper"], max_jobs=1).run()
    repo = JobRepository(aws_stack.table)
    before = repo.get(job_id)
    s3 = boto3.client("s3")
    assert before.result is not None
    etags = {k: s3.head_object(Bucket=aws_stack.bucket, Key=k)["LastModified"] for k in before.result.outputs.values()}
    boto3.client("sqs").send_message(
        QueueUrl=aws_stack.jobs_queue_url, MessageBody=JobMessage(job_id=job_id).model_dump_json()
    )
    time.sleep(1.1)  # S3 LastModified has one-second resolution

    worker = make_worker(aws_stack, engines["faster-whisper"])
    worker.run()

    assert worker.jobs_done == 0
    assert repo.get(job_id) == before
    assert {k: s3.head_object(Bucket=aws_stack.bucket, Key=k)["LastModified"] for k in etags} == etags
    assert queue_counts(aws_stack) == (0, 0)


def test_a_stale_attempt_cannot_commit(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    """Worker A loses its lease mid-job (another worker took the job over); A's commit is refused and
    only the newer attempt's result stands."""
    job_id = submit(aws_stack, speech["long"][0])
    repo = JobRepository(aws_stack.table)
    later = JobRepository(aws_stack.table, clock=lambda: time.time() + 3600)  # A's lease has expired by then

    def take_over(_batch: Sequence[Any]) -> None:
        if hook.calls == 1:
            later.claim(job_id, "worker-b", lease_seconds=300)  # what a second worker does

    hook = Scripted(engines["faster-whisper"], take_over)
    make_worker(aws_stack, hook, max_jobs=1, heartbeat_seconds=0.1).run()

    job = repo.get(job_id)
    assert job.status is JobStatus.RUNNING and job.attempt == 2 and job.worker == "worker-b"
    assert job.result is None


def test_poison_message_is_deleted(aws_stack: Stack, engines: dict[str, Engine]) -> None:
    boto3.client("sqs").send_message(QueueUrl=aws_stack.jobs_queue_url, MessageBody="not json at all")
    worker = make_worker(aws_stack, engines["faster-whisper"])
    worker.run()
    assert queue_counts(aws_stack) == (0, 0)


# ---- interruptions --------------------------------------------------------------------


@pytest.mark.usefixtures("restore_signals")
def test_sigterm_mid_job_gives_the_job_back_and_exits(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    job_id = submit(aws_stack, speech["long"][0])

    def sigterm(_batch: Sequence[Any]) -> None:
        if hook.calls == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    hook = Scripted(engines["faster-whisper"], sigterm)
    worker = make_worker(aws_stack, hook, idle_exit_seconds=600, batch_size=1)
    worker.install_signal_handlers()

    assert worker.run() == 0  # exits cleanly, without waiting for the idle period

    job = JobRepository(aws_stack.table).get(job_id)
    assert job.status is JobStatus.QUEUED and job.attempt == 1 and job.worker is None
    assert queue_counts(aws_stack) == (1, 0)  # visible again at once
    # and the next worker finishes it
    make_worker(aws_stack, engines["faster-whisper"], max_jobs=1).run()
    done = JobRepository(aws_stack.table).get(job_id)
    assert (done.status, done.attempt) == (JobStatus.SUCCEEDED, 2)


def test_cancel_mid_job_stops_within_a_segment(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    job_id = submit(aws_stack, speech["long"][0])
    seen: list[int] = []

    def cancel(_batch: Sequence[Any]) -> None:
        if hook.calls == 1:
            assert call("POST", f"/jobs/{job_id}/cancel")[0] == 200
            until_heard(worker, job_id)  # the worker learns of it at a heartbeat
        seen.append(hook.calls)

    hook = Scripted(engines["faster-whisper"], cancel)
    worker = make_worker(aws_stack, hook, heartbeat_seconds=0.1, batch_size=1)
    worker.run()

    job = JobRepository(aws_stack.table).get(job_id)
    assert job.status is JobStatus.CANCELLED
    assert job.result is None
    assert hook.calls == 1  # stopped at the first window boundary after the cancel
    assert queue_counts(aws_stack) == (0, 0)
    listing = boto3.client("s3").list_objects_v2(Bucket=aws_stack.bucket, Prefix="outputs/")
    assert [o["Key"] for o in listing.get("Contents", [])] == [
        job.log_key or f"outputs/{job.owner_key}/{job_id}/log.txt"
    ]


def test_transient_failure_gives_the_job_back_for_a_retry(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    job_id = submit(aws_stack, speech["wav"][0])

    def boom(_batch: Sequence[Any]) -> None:
        raise ConnectionError("S3 went away")

    make_worker(aws_stack, Scripted(engines["faster-whisper"], boom)).run()

    job = JobRepository(aws_stack.table).get(job_id)
    assert job.status is JobStatus.QUEUED and job.attempt == 1
    assert sum(queue_counts(aws_stack)) == 1  # the message comes back after a short backoff


def test_idle_worker_exits_after_the_idle_period(aws_stack: Stack, engines: dict[str, Engine]) -> None:
    worker = make_worker(aws_stack, engines["faster-whisper"], idle_exit_seconds=1.5)
    started = time.monotonic()
    assert worker.run() == 0
    assert 1.5 <= time.monotonic() - started < 10
    assert worker.jobs_done == 0


def test_max_jobs_caps_a_worker(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    ids = [submit(aws_stack, speech["wav"][0]) for _ in range(2)]
    worker = make_worker(aws_stack, engines["faster-whisper"], max_jobs=1, idle_exit_seconds=600)
    worker.run()
    statuses = sorted(JobRepository(aws_stack.table).get(i).status.value for i in ids)
    assert statuses == ["queued", "succeeded"]


def test_a_message_for_a_job_still_pending_is_a_stray_and_deleted(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    """The upload intake records a job as queued before it sends the job's message (and the
    sweeper re-sends a message lost in between): nothing legitimate sends a message for a
    pending job. Such a stray is deleted with a warning, at once (no give-back, no waiting
    for the job to change), and the job is left as it was, to be claimed once queued."""
    data = speech["wav"][0].read_bytes()
    job = create(size=len(data))
    post_upload(job["upload"], data)  # uploaded, but the intake has not run yet
    repo = JobRepository(aws_stack.table)
    boto3.client("sqs").send_message(
        QueueUrl=aws_stack.jobs_queue_url, MessageBody=JobMessage(job_id=job["job_id"]).model_dump_json()
    )

    worker = make_worker(aws_stack, engines["faster-whisper"])
    worker.run()

    assert worker.outcomes == [Outcome.STRAY] and worker.jobs_done == 0
    still = repo.get(job["job_id"])
    assert (still.status, still.attempt) == (JobStatus.PENDING, 0)
    assert queue_counts(aws_stack) == (0, 0)  # deleted, not put back
    assert [r.levelname for r in caplog.records if "a stray" in r.getMessage()] == ["WARNING"]
    # the intake queues the job and sends its message: claimed and done as usual
    deliver_uploads(aws_stack)
    make_worker(aws_stack, engines["faster-whisper"], max_jobs=1).run()
    done = repo.get(job["job_id"])
    assert (done.status, done.attempt) == (JobStatus.SUCCEEDED, 1)


def test_a_job_records_its_cost_at_the_pools_price(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    """The job record and GET carry the job's cost: its compute seconds at the hourly price
    the stack gives the pool's workers (none set: no cost, never a guess)."""
    priced = submit(aws_stack, speech["wav"][0])
    assert make_worker(aws_stack, engines["faster-whisper"], max_jobs=1, instance_hourly_usd=0.4).run() == 0
    unpriced = submit(aws_stack, speech["wav"][0])
    assert make_worker(aws_stack, engines["faster-whisper"], max_jobs=1).run() == 0

    result = call("GET", f"/jobs/{priced}")[1]["result"]
    assert result["cost_usd"] == pytest.approx(result["compute_seconds"] * 0.4 / 3600, rel=1e-3)
    assert 0 < result["cost_usd"] < 0.01
    record = JobRepository(aws_stack.table).get(priced)
    assert record.result is not None and record.result.cost_usd == result["cost_usd"]
    assert call("GET", f"/jobs/{unpriced}")[1]["result"]["cost_usd"] is None
