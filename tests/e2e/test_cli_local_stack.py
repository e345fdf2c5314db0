"""The job commands against a real local stack: stdout carries only what was asked for (pure
JSON for `--format json`, the bare id for `submit`), ids resolve from a prefix, `list` pages,
filters by time and shows creation times."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from batchscribe.keys import is_job_id
from batchscribe_cli.local import LocalStack
from harness.audio import SHORT_TEXT, convert, speak
from tests.e2e.waits import hold_workers_back, running_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # room for the 300 MiB multipart upload
    yield from running_stack(tmp_path_factory, max_upload_bytes=512 * 1024 * 1024)


@pytest.fixture(scope="module")
def mp3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("audio")
    return convert(speak(SHORT_TEXT, d / "short.wav"), d / "short.mp3")


def cli(stack: LocalStack, *args: str, owner: str = "dave") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BATCHSCRIBE_API": stack.url, "BATCHSCRIBE_OWNER": owner}
    return subprocess.run(
        [sys.executable, "-m", "batchscribe_cli", *args], env=env, capture_output=True, text=True, timeout=180
    )


def test_submit_wait_json_is_pure_json_and_a_prefix_names_the_job(stack: LocalStack, mp3: Path, tmp_path: Path) -> None:
    env = {**os.environ, "BATCHSCRIBE_API": stack.url, "BATCHSCRIBE_OWNER": "dave"}
    cli_cmd = f"{sys.executable} -m batchscribe_cli submit {mp3} --wait --format json --language en"
    piped = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{cli_cmd} | {sys.executable} -m json.tool"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert piped.returncode == 0, piped.stderr  # json.tool accepted all of stdout
    transcript = json.loads(piped.stdout)
    assert "weather" in transcript["text"].lower()
    found = re.search(r"job ([0-9a-f]{32}) submitted", piped.stderr)  # the id went to stderr
    assert found, piped.stderr
    job_id = found.group(1)
    assert "succeeded 100%" in piped.stderr  # and so did the progress

    status = cli(stack, "status", job_id[:8], "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["job_id"] == job_id
    human = cli(stack, "status", job_id[:8])
    assert human.returncode == 0 and re.search(r"compute: [0-9.]+ s \(real-time factor [0-9.]+\)", human.stdout)
    saved = cli(stack, "result", job_id[:6], "-o", str(tmp_path / "talk.srt"))  # format from the extension
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout == "" and (tmp_path / "talk.srt").read_text().startswith("1\n00:00:00,")
    waited = cli(stack, "wait", job_id[:8])
    assert waited.returncode == 0 and waited.stdout.startswith(f"{job_id}  succeeded  100%")
    other = cli(stack, "status", job_id[:8], owner="mallory")  # someone else's job is no match
    assert other.returncode == 1 and "none of your jobs" in other.stderr


def test_list_pages_filters_by_time_and_shows_creation_times(stack: LocalStack, mp3: Path) -> None:
    stack.set_max_workers(0)  # the jobs may stay queued: this is about listing them
    try:
        submitted = [cli(stack, "submit", str(mp3), "-q", owner="erin") for _ in range(3)]
    finally:
        stack.set_max_workers(1)
    ids = [s.stdout.strip() for s in submitted]
    assert all(is_job_id(i) for i in ids), [s.stdout + s.stderr for s in submitted]  # stdout: the bare id

    first = cli(stack, "list", "--limit", "2", owner="erin")
    lines = first.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ids[::-1][:2]  # newest first
    assert datetime.now().strftime("%Y-%m-%d") in lines[0]  # the creation time, local
    more = re.search(r"more: batchscribe list --next-token (\S+)", first.stderr)
    assert more, first.stderr
    rest = cli(stack, "list", "--limit", "2", "--next-token", more.group(1), "-q", owner="erin")
    assert rest.stdout.split() == ids[:1]

    listed = json.loads(cli(stack, "list", "--since", "1h", "--json", owner="erin").stdout)
    assert [j["job_id"] for j in listed["jobs"]] == ids[::-1] and listed["next_token"] is None
    future = cli(stack, "list", "--since", "2999-01-01", owner="erin")
    assert future.returncode == 0 and future.stdout == "" and "no jobs since" in future.stderr


def test_models_and_a_primed_submit(stack: LocalStack, mp3: Path) -> None:
    """`models` names what `--model` may take; `--initial-prompt` and `--own-windows` reach the
    job's options, and a model the stack does not serve is refused with the command that lists them."""
    listed = cli(stack, "models")
    # the pool the stack has: its workers on this machine's CPU, no GPU pool
    assert listed.returncode == 0 and listed.stdout.startswith("tiny.en  (cpu pool, English only)"), listed
    offered = json.loads(cli(stack, "models", "--json").stdout)
    assert [m["name"] for m in offered["models"]] == ["tiny.en"]

    submitted = cli(
        stack, "submit", str(mp3), "--language", "en", "--initial-prompt", "Batchscribe, Whisper", "--own-windows"
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    job = json.loads(cli(stack, "status", job_id, "--json").stdout)
    assert job["options"]["initial_prompt"] == "Batchscribe, Whisper" and job["options"]["share_windows"] is False
    assert cli(stack, "wait", job_id[:8], "-q").returncode == 0

    refused = cli(stack, "submit", str(mp3), "--model", "large-v2")
    assert refused.returncode != 0 and "GET /models" in refused.stderr and "Traceback" not in refused.stderr


def test_a_callback_reaches_a_receiver_signed_with_the_stacks_secret(stack: LocalStack, mp3: Path) -> None:
    """The local stack delivers callbacks as the deployed one does (the table's stream -> the
    notify handler -> the webhooks queue -> the webhook handler), signed with the secret it
    keeps in its data folder."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from batchscribe.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify

    got: list[tuple[bool, str, dict[str, object]]] = []
    secret = stack.webhook_secret().encode()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers["Content-Length"]))
            got.append(
                (verify(secret, self.headers[SIGNATURE_HEADER], data), self.headers[EVENT_ID_HEADER], json.loads(data))
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/done"
        submitted = cli(stack, "submit", str(mp3), "--language", "en", "--callback-url", url)
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        assert cli(stack, "wait", job_id, "-q").returncode == 0
        deadline = time.time() + 30
        while not got and time.time() < deadline:
            time.sleep(0.2)
    finally:
        server.shutdown()
        server.server_close()
    [(verified, event_id, body)] = got
    assert verified and event_id == f"{job_id}.succeeded" and body["status"] == "succeeded"
    deadline = time.time() + 10
    while time.time() < deadline:
        callback = json.loads(cli(stack, "status", job_id, "--json").stdout)["callback"]
        if callback["state"] == "delivered":
            break
        time.sleep(0.3)
    assert (callback["state"], callback["last_status"]) == ("delivered", 204)


def test_submit_by_url_and_by_s3_uri(stack: LocalStack, mp3: Path) -> None:
    """No upload: the worker fetches an https:// URL (http on loopback here: the local stack
    allows it), or an s3:// object the CLI presigns with the caller's own credentials (moto's
    S3 here, through AWS_ENDPOINT_URL like any AWS tool)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import boto3

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(mp3.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{mp3.name}"
        by_url = cli(stack, "submit", url, "--wait", "--format", "txt", "--language", "en")
    finally:
        server.shutdown()
        server.server_close()
    assert by_url.returncode == 0, by_url.stderr
    assert "weather" in by_url.stdout.lower()

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="callers-media")
    s3.upload_file(str(mp3), "callers-media", "calls/short.mp3")
    by_s3 = cli(stack, "submit", "s3://callers-media/calls/short.mp3", "--wait", "--format", "json", "--language", "en")
    assert by_s3.returncode == 0, by_s3.stderr
    assert "weather" in json.loads(by_s3.stdout)["text"].lower()
    job_id = re.search(r"job ([0-9a-f]{32}) submitted", by_s3.stderr).group(1)  # type: ignore[union-attr]
    job = json.loads(cli(stack, "status", job_id, "--json").stdout)
    assert job["input"]["source_url"].endswith("/callers-media/calls/short.mp3")  # no signature shown
    assert (job["input"]["filename"], job["input"]["size_bytes"]) == ("short.mp3", mp3.stat().st_size)

    missing = cli(stack, "submit", "s3://callers-media/calls/nope.mp3")
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "s3://callers-media/calls/nope.mp3 does not exist" in missing.stderr
    refused = cli(stack, "submit", "ftp://example.com/a.mp3")
    assert refused.returncode == 2 and "ftp:// URLs are not supported" in refused.stderr


def _wav(path: Path, size: int) -> Path:
    """A WAV file of `size` bytes of silence (16 kHz mono 16-bit), written sparse: quick."""
    import struct

    data = size - 44
    header = (
        b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    )
    with path.open("wb") as f:
        f.write(header + b"data" + struct.pack("<I", data))
        f.truncate(size)
    return path


def _once_uploaded(stack: LocalStack, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """The job's record once intake has looked at its upload (no longer pending), or at the timeout."""
    deadline = time.time() + timeout
    while True:
        job: dict[str, Any] = json.loads(cli(stack, "status", job_id, "--json").stdout)
        if job["status"] != "pending" or time.time() >= deadline:
            return job
        time.sleep(0.5)


def test_a_300_mb_upload_goes_in_parts_with_bounded_memory(stack: LocalStack, tmp_path: Path) -> None:
    big = _wav(tmp_path / "long-meeting.wav", 300 * 1024 * 1024)
    try:
        hold_workers_back(stack)  # about the upload: no worker needs to spend hours on the silence
        env = {**os.environ, "BATCHSCRIBE_API": stack.url, "BATCHSCRIBE_OWNER": "dave"}
        measure = (
            "import resource, subprocess, sys; "
            "r = subprocess.run(sys.argv[1:]); "
            "print('peak_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(r.returncode)"
        )
        cmd = [sys.executable, "-c", measure, sys.executable, "-m", "batchscribe_cli", "submit", str(big), "-q"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        peak_mib = int(re.search(r"peak_kib (\d+)", done.stderr).group(1)) / 1024  # type: ignore[union-attr]
        print(f"client peak RSS uploading 300 MiB: {peak_mib:.0f} MiB")
        assert peak_mib < 100
        job_id = done.stdout.strip()
        job = _once_uploaded(stack, job_id)
        assert job["status"] == "queued" and job["input"]["size_bytes"] == big.stat().st_size
        assert cli(stack, "cancel", job_id).returncode == 0
    finally:
        stack.set_max_workers(1)


def test_an_interrupted_upload_resumes_with_the_missing_parts(stack: LocalStack, tmp_path: Path) -> None:
    import signal

    from batchscribe_cli.cli import EXIT_INTERRUPTED

    big = _wav(tmp_path / "interview.wav", 40 * 1024 * 1024)  # three parts of 16 MiB
    try:
        hold_workers_back(stack)  # the job stays queued
        env = {**os.environ, "BATCHSCRIBE_API": stack.url, "BATCHSCRIBE_OWNER": "dave", "BATCHSCRIBE_PROGRESS": "true"}
        for _ in range(3):  # a busy machine may read the first part's line only once all are in
            # Ctrl-C as at a terminal, even where this run was started in the background (whose
            # children inherit SIGINT ignored, and Python then never raises KeyboardInterrupt)
            proc = subprocess.Popen(
                [sys.executable, "-m", "batchscribe_cli", "submit", str(big)], env=env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=False,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )  # fmt: skip
            assert proc.stderr is not None
            seen = b""
            while b"(16/40 MiB)" not in seen:  # the first part is in
                chunk = os.read(proc.stderr.fileno(), 256)
                assert chunk, seen
                seen += chunk
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
            message = (seen + err).decode()
            if proc.returncode == 0 and b"(40/40 MiB)" in seen + err:  # the upload beat the interrupt
                assert cli(stack, "cancel", out.decode().split()[0]).returncode == 0
                continue
            break
        assert proc.returncode == EXIT_INTERRUPTED, message
        resume = re.search(r"resume with: (batchscribe upload \S+ \S+)", message)
        assert resume, message
        assert "Traceback" not in message

        again = subprocess.run(
            [sys.executable, "-m", "batchscribe_cli", *resume.group(1).split()[1:]],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        first = re.search(r"uploading\s+(\d+)% \((\d+)/40 MiB\)", again.stderr)
        assert first and int(first.group(2)) >= 16, again.stderr  # it started past what S3 held
        job_id = resume.group(1).split()[2]
        job = _once_uploaded(stack, job_id)
        assert job["status"] == "queued" and job["input"]["size_bytes"] == big.stat().st_size
        assert cli(stack, "cancel", job["job_id"]).returncode == 0
    finally:
        stack.set_max_workers(1)


def test_resuming_with_the_wrong_file_is_refused_and_restart_unwedges_the_upload(
    stack: LocalStack, tmp_path: Path
) -> None:
    from batchscribe_cli.client import Client

    right = _wav(tmp_path / "right.wav", 40 * 1024 * 1024)  # three parts of 16 MiB
    smaller = _wav(tmp_path / "other.wav", 20 * 1024 * 1024)
    same_size = _wav(tmp_path / "take2.wav", 40 * 1024 * 1024)
    with same_size.open("r+b") as f:  # other bytes in every part
        for offset in range(1024, same_size.stat().st_size, 8 * 1024 * 1024):
            f.seek(offset)
            f.write(b"\x01\x02" * 512)
    try:
        hold_workers_back(stack)
        client = Client(stack.url, owner="dave")
        job_id = client.create_job(right)["job_id"]
        # Given an upload begun with another file of the same size (its first part is in S3)
        ticket = client.request("POST", f"/jobs/{job_id}/multipart")
        with same_size.open("rb") as f:
            part = f.read(ticket["part_size"])
        assert client.session.put(ticket["parts"][0]["url"], data=part, timeout=60).status_code == 200

        # When the user resumes with a file of another size: refused at once, said plainly
        other = cli(stack, "upload", job_id[:8], str(smaller))
        assert other.returncode == 2 and "wrong file" in other.stderr and "right.wav" in other.stderr, other.stderr
        # with the right file: the part S3 holds is not this file's, and the way out is named
        wedged = cli(stack, "upload", job_id[:8], str(right))
        assert wedged.returncode == 2 and "wrong file: part 1" in wedged.stderr, wedged.stderr
        assert f"batchscribe upload {job_id[:8]} FILE --restart" in wedged.stderr

        # Then --restart drops the held parts and sends the whole file: the job is queued
        restarted = cli(stack, "upload", job_id[:8], str(right), "--restart")
        assert restarted.returncode == 0, restarted.stderr
        job = _once_uploaded(stack, job_id)
        assert job["status"] == "queued" and job["input"]["size_bytes"] == right.stat().st_size
        assert cli(stack, "cancel", job_id).returncode == 0
    finally:
        stack.set_max_workers(1)


def test_a_flac_file_without_an_extension_is_transcribed(stack: LocalStack, mp3: Path, tmp_path: Path) -> None:
    bare = convert(mp3, tmp_path / "x.flac").rename(tmp_path / "recording")  # its name says nothing

    out = cli(stack, "submit", str(bare), "--wait", "--language", "en")

    assert out.returncode == 0, out.stderr
    assert "weather" in out.stdout.lower()
