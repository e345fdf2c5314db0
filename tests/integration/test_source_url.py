"""Input by URL: a job created with `source_url` is queued at once and its worker fetches the
file, within limits, through the same SSRF guard as callbacks. Served here by a real HTTP
server on loopback (the local stack's `allow_private`); the guard's refusals of non-public
addresses are shown with a resolver that answers what an attacker's DNS would."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from batchscribe import errors
from batchscribe.models import JobStatus
from batchscribe.repository import JobRepository
from batchscribe.settings import ApiSettings
from batchscribe.sources import FetchFailed, FetchLimits, FetchStopped, SourceRefused, check_source, fetch, redacted
from gpu_container.worker.engines import Engine
from gpu_container.worker.main import Outcome
from harness.audio import spoken_words
from tests.conftest import OWNER_B, Stack, reset_caches
from tests.helpers import call
from tests.integration.workers import make_worker, queue_counts, s3_text


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False  # no Content-Length: the size is only known by reading
    short_by: int = 0  # send this many bytes fewer than Content-Length says, then close
    delay: float = 0  # seconds between 64 KiB pieces


class FileServer:
    """A scripted HTTP server on loopback: path -> Route; records each request's path and Host."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str]] = []
        self.asked: dict[str, threading.Event] = collections.defaultdict(threading.Event)  # path -> requested
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests.append((self.path, self.headers.get("Host", "")))
                outer.asked[self.path].set()
                route = outer.routes.get(self.path, Route(status=404, body=b"no such file"))
                self.send_response(route.status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                if not route.chunked:
                    self.send_header("Content-Length", str(len(route.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                body = route.body[: len(route.body) - route.short_by]
                for i in range(0, len(body), 65536):
                    try:
                        self.wfile.write(body[i : i + 65536])
                    except OSError:
                        return
                    time.sleep(route.delay)
                self.close_connection = True

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, path: str, route: Route) -> str:
        self.routes[path.split("?")[0]] = route
        self.routes[path] = route
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


def limits(max_bytes: int = 10_000_000, **kw: Any) -> FetchLimits:
    return FetchLimits(max_bytes=max_bytes, **{"timeout_seconds": 5, **kw})


def fetch_local(url: str, dest: Path, lim: FetchLimits | None = None, **kw: Any) -> Any:
    return fetch(url, dest, lim or limits(), allow_private=True, **kw)


# ---- the fetch and its limits ------------------------------------------------------------


def test_a_file_is_fetched_whole_following_a_redirect(files: FileServer, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000
    files.add("/media/talk.wav", Route(body=data, headers={"Content-Type": "audio/wav"}))
    url = files.add("/go?sig=secret", Route(status=302, headers={"Location": "/media/talk.wav"}))
    got = fetch_local(url, tmp_path / "in")
    assert (got.size, got.content_type, got.redirects) == (len(data), "audio/wav", 1)
    assert (tmp_path / "in").read_bytes() == data
    assert files.requests[-1][1] == files.base.removeprefix("http://")  # the URL's host, not the pinned address


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_a_file_over_the_cap_is_source_too_large(files: FileServer, tmp_path: Path, chunked: bool) -> None:
    """Refused on its Content-Length before a byte is read, or, without one, as soon as the
    count passes the cap: never more than the cap on disk."""
    url = files.add("/big.wav", Route(body=b"x" * 3_000_000, chunked=chunked))
    with pytest.raises(FetchFailed) as caught:
        fetch_local(url, tmp_path / "in", limits(1_000_000))
    assert (caught.value.code, caught.value.permanent) == (errors.SOURCE_TOO_LARGE, True)
    written = (tmp_path / "in").stat().st_size if (tmp_path / "in").exists() else 0
    assert written <= 1_000_000


@pytest.mark.parametrize(
    ("status", "permanent"), [(404, True), (403, True), (410, True), (500, False), (503, False), (429, False)]
)
def test_answers_are_classified(files: FileServer, tmp_path: Path, status: int, permanent: bool) -> None:
    url = files.add("/x.wav?X-Amz-Signature=abc", Route(status=status, body=b"nope"))
    with pytest.raises(FetchFailed) as caught:
        fetch_local(url, tmp_path / "in")
    assert (caught.value.code, caught.value.permanent) == (errors.SOURCE_UNREACHABLE, permanent)
    assert str(status) in str(caught.value) and "abc" not in str(caught.value)  # no signature in messages


def test_a_connection_cut_off_is_transient(files: FileServer, tmp_path: Path) -> None:
    truncated = files.add("/cut.wav", Route(body=b"y" * 500_000, short_by=100_000))
    with pytest.raises(FetchFailed) as caught:
        fetch_local(truncated, tmp_path / "a")
    assert not caught.value.permanent


def closed_port(files: FileServer) -> str:
    return files.base.rsplit(":", 1)[0] + ":1/x.wav"  # nothing listens on port 1


def https_to_plain_http(files: FileServer) -> str:
    return files.add("/x.wav", Route(body=b"RIFF")).replace("http://", "https://")


@pytest.mark.parametrize(
    ("make_url", "cause"),
    [(closed_port, "connection refused"), (https_to_plain_http, "TLS error")],
    ids=["connection-refused", "tls-error"],
)
def test_a_source_that_cannot_answer_is_permanent_with_its_cause(
    files: FileServer, tmp_path: Path, make_url: Any, cause: str
) -> None:
    with pytest.raises(FetchFailed) as caught:
        fetch_local(make_url(files), tmp_path / "b")
    assert (caught.value.code, caught.value.permanent) == (errors.SOURCE_UNREACHABLE, True)
    assert cause in str(caught.value)


def test_a_transfer_over_its_time_limit_is_transient(files: FileServer, tmp_path: Path) -> None:
    url = files.add("/slow.wav", Route(body=b"z" * 3_000_000))
    ticks = iter(range(1000))  # a clock that moves a second per look
    with pytest.raises(FetchFailed, match="not fetched in") as caught:
        fetch_local(url, tmp_path / "in", limits(max_seconds=1.5), clock=lambda: float(next(ticks)))
    assert not caught.value.permanent


def test_stop_ends_the_transfer(files: FileServer, tmp_path: Path) -> None:
    url = files.add("/long.wav", Route(body=b"s" * 3_000_000))
    with pytest.raises(FetchStopped):
        fetch_local(url, tmp_path / "in", stop=lambda: True)


def test_an_empty_file_is_upload_empty(files: FileServer, tmp_path: Path) -> None:
    with pytest.raises(FetchFailed) as caught:
        fetch_local(files.add("/empty.wav", Route(body=b"")), tmp_path / "in")
    assert (caught.value.code, caught.value.permanent) == (errors.UPLOAD_EMPTY, True)


@pytest.mark.parametrize(
    "location",
    ["file:///etc/passwd", "ftp://example.com/a.wav", "http://user:pw@127.0.0.1/a.wav", "gopher://127.0.0.1:25/"],
)
def test_each_redirect_is_checked_like_the_first(files: FileServer, tmp_path: Path, location: str) -> None:
    url = files.add("/redirect.wav", Route(status=301, headers={"Location": location}))
    with pytest.raises(FetchFailed) as caught:
        fetch_local(url, tmp_path / "in")
    assert (caught.value.code, caught.value.permanent) == (errors.SOURCE_UNREACHABLE, True)


def test_a_redirect_loop_stops(files: FileServer, tmp_path: Path) -> None:
    url = files.add("/loop.wav", Route(status=307, headers={"Location": "/loop.wav"}))
    with pytest.raises(FetchFailed, match="redirects") as caught:
        fetch_local(url, tmp_path / "in")
    assert caught.value.permanent
    assert len(files.requests) == 6  # the first request and MAX_REDIRECTS more


@pytest.mark.parametrize("answers", [["10.0.0.5"], ["93.184.216.34", "127.0.0.1"], ["169.254.169.254"], ["::1"]])
def test_a_host_resolving_to_an_internal_address_is_never_connected_to(tmp_path: Path, answers: list[str]) -> None:
    """Deployed (no allow_private): the name is resolved at fetch time and every answer must
    be public, so DNS that points at the metadata service or the VPC gets nothing."""
    with pytest.raises(FetchFailed) as caught:
        fetch("https://media.example.com/a.wav", tmp_path / "in", limits(), resolver=lambda _h, _p: answers)
    assert (caught.value.code, caught.value.permanent) == (errors.SOURCE_UNREACHABLE, True)
    assert not (tmp_path / "in").exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a.wav",
        "s3://bucket/key.wav",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/a.wav",
        "https://localhost/a.wav",
        "https://u:p@example.com/a.wav",
        "file:///etc/passwd",
    ],
)
def test_unsafe_source_urls_are_refused(url: str) -> None:
    with pytest.raises(SourceRefused, match="source_url"):
        check_source(url)


def test_redacted_drops_the_signature() -> None:
    url = "https://b.s3.amazonaws.com/k/talk%20one.wav?X-Amz-Signature=abc&X-Amz-Credential=def"
    assert redacted(url) == "https://b.s3.amazonaws.com/k/talk%20one.wav"


# ---- the API -----------------------------------------------------------------------------


@pytest.fixture
def local_sources(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The API as the local stack configures it: http:// and loopback sources allowed."""
    monkeypatch.setenv(ApiSettings.env_name("allow_private"), "true")
    reset_caches()
    return aws_stack


def test_a_source_url_job_is_queued_at_once_without_an_upload(aws_stack: Stack) -> None:
    url = "https://media.example.com/calls/monday%20call.mp3?X-Amz-Signature=abc"
    status, job = call("POST", "/jobs", {"source_url": url, "options": {"language": "en"}})
    assert status == 201, job
    assert job["status"] == "queued" and job["upload"] is None and job["queued_at"]
    assert job["input"] == {
        "filename": "monday call.mp3",
        "content_type": "audio/mpeg",
        "size_bytes": 50 * 1024 * 1024,  # not fetched yet: the cap (the deployment's limit)
        "source_url": "https://media.example.com/calls/monday%20call.mp3",  # never the signature
        "duration_seconds": None,  # known once a worker has opened the file
    }
    assert queue_counts(aws_stack) == (1, 0)  # its message went out with the create
    record = JobRepository(aws_stack.table).get(job["job_id"])
    assert record.input.source_url == url  # the worker needs the signed URL
    # another owner cannot see it
    assert call("GET", f"/jobs/{job['job_id']}", owner=OWNER_B)[0] == 404


def test_a_replayed_create_sends_no_second_message(aws_stack: Stack) -> None:
    body = {"source_url": "https://media.example.com/a.wav", "size_bytes": 1000}
    first = call("POST", "/jobs", body, headers={"Idempotency-Key": "k1"})
    again = call("POST", "/jobs", body, headers={"Idempotency-Key": "k1"})
    assert first[0] == again[0] == 201 and first[1]["job_id"] == again[1]["job_id"]
    assert first[1]["input"]["size_bytes"] == 1000
    assert queue_counts(aws_stack) == (1, 0)


def test_a_lost_message_is_sent_again_by_the_sweeper(aws_stack: Stack) -> None:
    """The record is queued before the message goes out: if the send is lost, the sweeper's
    redrive of a job queued without a claim sends it."""
    from batchscribe.lifecycle import Lifecycle
    from batchscribe.settings import LifecycleSettings
    from tests.helpers import receive_all

    _, job = call("POST", "/jobs", {"source_url": "https://media.example.com/a.wav"})
    assert len(receive_all(aws_stack.jobs_queue_url)) == 1  # and thrown away: lost
    settings = LifecycleSettings.from_env().model_copy(update={"queued_redrive_seconds": 10})
    later = Lifecycle.from_settings(settings, clock=lambda: time.time() + 60)
    assert later.sweep().redriven == 1
    assert queue_counts(aws_stack) == (1, 0)
    assert JobRepository(aws_stack.table).get(job["job_id"]).status is JobStatus.QUEUED


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"source_url": "https://169.254.169.254/latest/meta-data/"}, 400, "invalid_source_url"),
        ({"source_url": "http://media.example.com/a.wav"}, 400, "invalid_source_url"),
        ({"source_url": "s3://bucket/a.wav"}, 400, "invalid_source_url"),
        ({"source_url": 5}, 400, "invalid_request"),
        ({"source_url": "https://media.example.com/a.wav", "size_bytes": 10**12}, 413, "file_too_large"),
        (
            {"source_url": "https://media.example.com/a.txt", "content_type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
    ],
)
def test_bad_source_requests_get_their_codes(aws_stack: Stack, body: dict[str, Any], status: int, code: str) -> None:
    got = call("POST", "/jobs", body)
    assert (got[0], got[1]["error"]["code"]) == (status, code), got
    assert queue_counts(aws_stack) == (0, 0)


def test_an_upload_still_needs_its_fields(aws_stack: Stack) -> None:
    status, resp = call("POST", "/jobs", {"filename": "a.wav"})
    assert (status, resp["error"]["code"]) == (400, "invalid_request")
    assert {d["field"] for d in resp["error"]["details"]} == {"content_type", "size_bytes"}


# ---- the worker fetches it ---------------------------------------------------------------


def _source_job(url: str, **body: Any) -> str:
    status, job = call("POST", "/jobs", {"source_url": url, **body})
    assert status == 201, job
    return str(job["job_id"])


@pytest.mark.slow
def test_the_worker_fetches_and_transcribes_a_source_url(
    local_sources: Stack, files: FileServer, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    path, spoken = speech["mp3"]
    data = path.read_bytes()
    files.add("/media/talk.mp3", Route(body=data, headers={"Content-Type": "audio/mpeg"}))
    url = files.add("/share/talk?token=t0p-secret", Route(status=302, headers={"Location": "/media/talk.mp3"}))
    job_id = _source_job(url)

    assert make_worker(local_sources, engines["faster-whisper"], max_jobs=1, allow_private=True).run() == 0

    _, job = call("GET", f"/jobs/{job_id}")
    assert job["status"] == "succeeded", job
    assert job["input"]["size_bytes"] == len(data)  # the fetched size replaced the cap
    record = JobRepository(local_sources.table).get(job_id)
    assert record.result is not None
    heard = spoken_words(s3_text(local_sources, record.result.outputs["txt"])).split()
    assert len(heard) >= len(spoken_words(spoken).split()) // 2
    log = s3_text(local_sources, record.log_key or "")
    assert f"fetched bytes={len(data)}" in log and "redirects=1" in log
    assert "t0p-secret" not in log  # the URL's query never reaches the log
    assert queue_counts(local_sources) == (0, 0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("route", "size_bytes", "code"),
    [
        (Route(status=404, body=b"gone"), None, errors.SOURCE_UNREACHABLE),
        (Route(body=b"x" * 5000), 1000, errors.SOURCE_TOO_LARGE),
        (Route(body=b"not audio at all" * 100, headers={"Content-Type": "audio/wav"}), None, errors.INVALID_MEDIA),
    ],
    ids=["404", "over-its-size_bytes", "not-media"],
)
def test_a_bad_source_fails_the_job_at_once_with_its_code(
    local_sources: Stack,
    files: FileServer,
    engines: dict[str, Engine],
    route: Route,
    size_bytes: int | None,
    code: str,
) -> None:
    url = files.add("/file.wav", route)
    job_id = _source_job(url, **({"size_bytes": size_bytes} if size_bytes else {}))

    worker = make_worker(local_sources, engines["faster-whisper"], allow_private=True)
    worker.run()

    _, job = call("GET", f"/jobs/{job_id}")
    assert (job["status"], job["error"]["code"], job["attempt"]) == ("failed", code, 1), job
    assert Outcome.FAILED in worker.outcomes
    assert queue_counts(local_sources) == (0, 0)  # deleted: retrying cannot help


@pytest.mark.parametrize(
    ("make_url", "cause"),
    [(closed_port, "connection refused"), (https_to_plain_http, "TLS error")],
    ids=["connection-refused", "tls-error"],
)
def test_a_source_that_cannot_answer_fails_the_job_at_once_saying_why(
    local_sources: Stack, files: FileServer, engines: dict[str, Engine], make_url: Any, cause: str
) -> None:
    job_id = _source_job(make_url(files))

    make_worker(local_sources, engines["faster-whisper"], allow_private=True).run()

    _, job = call("GET", f"/jobs/{job_id}")
    assert (job["status"], job["error"]["code"], job["attempt"]) == ("failed", errors.SOURCE_UNREACHABLE, 1), job
    assert cause in job["error"]["message"]
    assert queue_counts(local_sources) == (0, 0)  # not tried again


def test_a_transient_failure_of_the_last_attempt_fails_the_job_with_its_cause(
    local_sources: Stack, files: FileServer, engines: dict[str, Engine]
) -> None:
    job_id = _source_job(files.add("/busy.wav", Route(status=503, body=b"busy")))

    make_worker(local_sources, engines["faster-whisper"], allow_private=True, max_attempts=1).run()

    _, job = call("GET", f"/jobs/{job_id}")
    assert (job["status"], job["error"]["code"], job["attempt"]) == ("failed", errors.RETRIES_EXHAUSTED, 1), job
    assert "attempt 1 of 1 failed" in job["error"]["message"] and "HTTP 503" in job["error"]["message"]
    assert queue_counts(local_sources) == (0, 0)


@pytest.mark.slow
def test_a_source_answering_500_is_retried_then_fetched(
    local_sources: Stack, files: FileServer, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    url = files.add("/flaky.wav", Route(status=503, body=b"busy"))
    job_id = _source_job(url)
    make_worker(local_sources, engines["faster-whisper"], allow_private=True).run()
    job = JobRepository(local_sources.table).get(job_id)
    assert (job.status, job.attempt) == (JobStatus.QUEUED, 1)  # given back for another attempt
    assert sum(queue_counts(local_sources)) == 1

    files.add("/flaky.wav", Route(body=speech["wav"][0].read_bytes()))
    _wait_visible(local_sources)  # the message is back after the worker's short backoff
    make_worker(local_sources, engines["faster-whisper"], max_jobs=1, allow_private=True).run()
    done = JobRepository(local_sources.table).get(job_id)
    assert (done.status, done.attempt) == (JobStatus.SUCCEEDED, 2)


@pytest.mark.slow
def test_a_cancel_during_the_fetch_stops_it(
    local_sources: Stack, files: FileServer, engines: dict[str, Engine]
) -> None:
    url = files.add("/slow.wav", Route(body=b"w" * 2_000_000, delay=0.05))  # ~1.5 s to send
    job_id = _source_job(url)
    cancelled: list[float] = []

    def cancel_soon() -> None:
        assert files.asked["/slow.wav"].wait(60)  # the worker is fetching
        assert call("POST", f"/jobs/{job_id}/cancel")[0] == 200
        cancelled.append(time.monotonic())

    threading.Thread(target=cancel_soon, daemon=True).start()
    worker = make_worker(local_sources, engines["faster-whisper"], heartbeat_seconds=0.1, allow_private=True)
    worker.run()
    assert JobRepository(local_sources.table).get(job_id).status is JobStatus.CANCELLED
    assert Outcome.CANCELLED in worker.outcomes
    assert queue_counts(local_sources) == (0, 0)


def _wait_visible(stack: Stack, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while queue_counts(stack)[0] == 0 and time.monotonic() < end:
        time.sleep(0.2)
