"""End to end over real HTTP: a local stack (moto server, the API handler behind an HTTP
server, emulated event sources, the scaler with local worker processes) started by the test."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import jiwer
import pytest

from batchscribe.settings import Timings
from batchscribe_cli.client import ApiError, Client
from batchscribe_cli.local import LocalConfig, LocalStack
from harness.audio import SHORT_TEXT, convert, long_text, speak
from tests.e2e.waits import hold_workers_back, statuses, wait_for_no_workers, wait_until, worker_logged

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    lines: list[str] = []
    config = LocalConfig(
        port=0,
        max_workers=2,
        data_dir=tmp_path_factory.mktemp("local"),
        timings=Timings.local().replace(idle_exit_seconds=3),
    )
    s = LocalStack(config, say=lines.append)
    s.lines = lines  # type: ignore[attr-defined]
    with s:
        yield s


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("audio")
    wav = speak(SHORT_TEXT, d / "short.wav")
    return {"wav": wav, "mp3": convert(wav, d / "short.mp3"), "long": speak(long_text(90), d / "long.wav")}


def client(stack: LocalStack, owner: str = "alice") -> Client:
    return Client(stack.url, owner=owner)


def job_keys(stack: LocalStack, job_id: str) -> list[str]:
    """The keys of what the job's attempts wrote (outputs, log)."""
    assert stack.resources is not None
    listed = boto3.client("s3").list_objects_v2(Bucket=stack.resources.bucket, Prefix="outputs/")
    return [o["Key"] for o in listed.get("Contents", []) if f"/{job_id}/" in o["Key"]]


def job_log(stack: LocalStack, job_id: str) -> str:
    """The job's log as its attempts flushed it ("" before the first flush)."""
    assert stack.resources is not None
    key = next((k for k in job_keys(stack, job_id) if k.endswith("/log.txt")), None)
    if key is None:
        return ""
    return str(boto3.client("s3").get_object(Bucket=stack.resources.bucket, Key=key)["Body"].read().decode())


@pytest.mark.parametrize("kind", ["wav", "mp3"])
def test_full_flow(stack: LocalStack, audio: dict[str, Path], kind: str) -> None:
    c = client(stack)
    job = c.submit(audio[kind], {"language": "en"})
    assert job["status"] == "pending"

    done = c.wait(job["job_id"], timeout=120)

    assert done["status"] == "succeeded", done
    assert done["result"]["language"] == "en"
    text = c.result_text(done, "txt")
    assert jiwer.wer(SHORT_TEXT.lower(), " ".join(text.lower().split())) <= 0.35
    srt = c.result_text(done, "srt")
    assert srt.startswith("1\n00:00:")
    assert c.result_text(done, "vtt").startswith("WEBVTT")
    assert any(j["job_id"] == job["job_id"] for j in c.list(status="succeeded")["jobs"])


def test_two_owners_cannot_see_each_other(stack: LocalStack, audio: dict[str, Path]) -> None:
    alice, bob = client(stack, "alice"), client(stack, "bob")
    job = alice.create_job(audio["wav"])
    with pytest.raises(ApiError) as err:
        bob.get(job["job_id"])
    assert (err.value.status, err.value.code) == (404, "job_not_found")
    with pytest.raises(ApiError) as err:
        bob.cancel(job["job_id"])
    assert err.value.status == 404
    assert job["job_id"] not in [j["job_id"] for j in bob.list()["jobs"]]
    assert alice.get(job["job_id"])["status"] == "pending"


def test_bad_input_gets_clear_errors_over_http(stack: LocalStack, tmp_path: Path) -> None:
    c = client(stack)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(ApiError) as err:
        c.create_job(notes, content_type="text/plain")
    assert (err.value.status, err.value.code) == (415, "unsupported_media_type")
    with pytest.raises(ApiError) as err:
        c.request("POST", "/jobs", {"filename": "a.wav"})
    assert (err.value.status, err.value.code) == (400, "invalid_request")


def test_cancel_while_queued(stack: LocalStack, audio: dict[str, Path]) -> None:
    assert stack.pool is not None
    c = client(stack)
    try:
        hold_workers_back(stack)  # so the job stays queued
        job = c.submit(audio["wav"])
        wait_until(lambda: c.get(job["job_id"])["status"] == "queued")
        assert c.cancel(job["job_id"])["status"] == "cancelled"
    finally:
        stack.set_max_workers(2)

    # a worker starts for the message still queued, finds the job finished and drops the message
    wait_until(lambda: worker_logged(stack, "duplicate message for a finished job; deleted", job["job_id"]))
    final = c.get(job["job_id"])
    assert final["status"] == "cancelled" and final["attempt"] == 0 and final["result"] is None
    assert statuses(stack, job["job_id"]) == ["pending", "queued", "cancelled"]  # it never ran


def test_cancel_while_running(stack: LocalStack, audio: dict[str, Path]) -> None:
    c = client(stack)
    job = c.submit(audio["long"])
    wait_until(lambda: c.get(job["job_id"])["status"] == "running", timeout=60, every=0.05)

    assert c.cancel(job["job_id"])["status"] == "cancelled"

    # the worker notices at its next heartbeat and stops (its last line in the job's log), or,
    # had the cancel raced its commit, the commit's condition refused the result
    wait_until(lambda: re.search(r"cancelled(; stopped| while committing)", job_log(stack, job["job_id"])) is not None)
    final = c.get(job["job_id"])
    assert final["status"] == "cancelled" and final["result"] is None
    assert statuses(stack, job["job_id"])[-2:] == ["running", "cancelled"]
    assert [k for k in job_keys(stack, job["job_id"]) if "transcript" in k] == []  # nothing left behind
    # the worker moved on: a new job still gets done
    assert c.wait(c.submit(audio["wav"])["job_id"], timeout=120)["status"] == "succeeded"


def test_twelve_jobs_two_workers_scale_up_and_back_to_zero(stack: LocalStack, audio: dict[str, Path]) -> None:
    assert stack.compute is not None
    wait_for_no_workers(stack)
    started_before = stack.compute.started
    stack.compute.peak = 0
    c = client(stack)

    # twelve: more than two workers hold (K = 4 each on a CPU), so the scaler goes to its cap
    ids = [c.submit(audio["mp3"])["job_id"] for _ in range(12)]
    finals = [c.wait(i, timeout=300)["status"] for i in ids]

    assert finals == ["succeeded"] * 12
    assert stack.compute.peak == 2  # scaled up to the cap, never past it
    assert stack.compute.started - started_before >= 2
    wait_for_no_workers(stack)  # and back to zero once the queue drained
    lines = stack.lines  # type: ignore[attr-defined]
    assert any("scaler: started" in line for line in lines)
    assert any("idle, exited; 0 running" in line for line in lines)


def test_worker_killed_mid_job_still_ends_succeeded_once(stack: LocalStack, audio: dict[str, Path]) -> None:
    assert stack.compute is not None and stack.resources is not None
    wait_for_no_workers(stack)
    c = client(stack)
    job = c.submit(audio["long"])

    def attempt_started() -> bool:  # claimed, and its log has begun
        return any(k.endswith("/log.txt") for k in job_keys(stack, job["job_id"]))

    wait_until(attempt_started, timeout=60, every=0.05)
    victims = stack.compute.pids()  # one, or two when a sweeper's redrive woke a second
    assert victims
    for victim in victims:
        os.kill(victim, signal.SIGKILL)

    done = c.wait(job["job_id"], timeout=180)
    assert done["status"] == "succeeded"
    assert done["attempt"] >= 2  # a second attempt finished what the killed one started
    assert sorted(k.rsplit("/", 1)[1] for k in job_keys(stack, job["job_id"])) == [
        "log.txt",
        "transcript.json",
        "transcript.srt",
        "transcript.txt",
        "transcript.vtt",
    ]
    log = job_log(stack, job["job_id"])
    assert log.count("succeeded") == 1  # exactly one committed result
    assert "attempt 1 on worker" in log and "attempt 2 on worker" in log  # the killed attempt left its lines
    # the stack's transition lines (read from the table's stream) end on the one commit, too
    wait_until(lambda: statuses(stack, job["job_id"])[-1:] == ["succeeded"], 10)
    assert statuses(stack, job["job_id"]).count("succeeded") == 1


def test_local_up_command_starts_and_stops_cleanly(tmp_path: Path) -> None:
    """`batchscribe local up` in the foreground: prints the URL, serves, and Ctrl-C stops it with
    no process left behind."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchscribe_cli", "local", "up", "--port", "0", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = ""
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not url:
            line = proc.stdout.readline()
            if line.startswith("BATCHSCRIBE_API="):
                url = line.strip().split("=", 1)[1]
        assert url.startswith("http://127.0.0.1:")
        assert Client(url).list()["jobs"] == []
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "local stack stopped" in out
    finally:
        if proc.poll() is None:  # a failed assertion must not leave the stack running
            proc.kill()
            proc.wait()


def test_cli_job_commands_against_the_local_stack(stack: LocalStack, audio: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "BATCHSCRIBE_API": stack.url, "BATCHSCRIBE_OWNER": "carol"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "batchscribe_cli", *args], env=env, capture_output=True, text=True, timeout=180
        )

    out = cli("submit", str(audio["mp3"]), "--wait", "--format", "srt", "--language", "en")
    assert out.returncode == 0, out.stderr
    found = re.search(r"job ([0-9a-f]{32}) submitted", out.stderr)
    assert found, out.stderr
    job_id = found.group(1)
    assert out.stdout.startswith("1\n00:00:00,")  # stdout: the transcript alone
    assert "succeeded 100%" in out.stderr  # progress while it waited
    assert job_id in cli("list", "--status", "succeeded").stdout
    assert cli("result", job_id, "--format", "vtt", "-o", str(tmp_path / "t.vtt")).returncode == 0
    assert (tmp_path / "t.vtt").read_text().startswith("WEBVTT")
    assert "succeeded" in cli("status", job_id).stdout

    notes = tmp_path / "notes.txt"
    notes.write_text("not audio")
    bad = cli("submit", str(notes))
    assert bad.returncode == 1
    assert "unsupported_media_type" in bad.stderr and "hint: " in bad.stderr
    assert "--content-type" in bad.stderr and "convert it" in bad.stderr  # name its type, or convert it
    missing = cli("status", "0" * 32)
    assert missing.returncode == 1 and "job_not_found" in missing.stderr and "hint:" in missing.stderr
    again = cli("cancel", job_id)
    assert again.returncode == 1 and "job_not_cancellable" in again.stderr
    unreachable = subprocess.run(
        [sys.executable, "-m", "batchscribe_cli", "list", "--api", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 3 and "batchscribe local up" in unreachable.stderr


def test_a_browser_can_call_the_local_api(stack: LocalStack) -> None:
    """CORS over real HTTP: the preflight (API Gateway's job when deployed) and the answer."""
    import requests

    preflight = requests.options(
        f"{stack.url}/jobs",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Idempotency-Key" in preflight.headers["Access-Control-Allow-Headers"]
    answer = requests.get(f"{stack.url}/jobs", headers={"Origin": "http://localhost:3000"}, timeout=10)
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == "*"


def test_the_handlers_metrics_do_not_pile_up_in_the_shared_process(stack: LocalStack) -> None:
    """Powertools empties its per-process metric set only when a Lambda invocation ends; all
    handlers share this process, so the local stack records none (no EMF lines in its output)."""
    import lambdas.api.handler as api
    import lambdas.sweeper.handler as sweeper

    for module in (api, sweeper):
        module.metrics.add_metric(name="Probe", unit="Count", value=1)
    assert "Probe" not in api.metrics.metric_set and "Probe" not in sweeper.metrics.metric_set
