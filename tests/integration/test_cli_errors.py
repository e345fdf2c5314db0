"""The CLI as a tool among others: every error one `error:` line (and perhaps a `hint:`), no
traceback, the documented exit status; Ctrl-C during a wait says how to resume; a closed pipe
ends quietly; job id prefixes resolve, and ambiguity is refused.

The CLI runs as a subprocess (`python -m batchscribe_cli`), against a small fake of the API on
127.0.0.1 where a case needs an answer (its owner header picks a behaviour), or against a port
nothing listens on."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from batchscribe.api_models import InputView, JobView, ResultView
from batchscribe.models import JobOptions, JobStatus, iso
from batchscribe_cli.cli import EXIT_CODES, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_PIPE, EXIT_UNAVAILABLE, EXIT_USAGE
from batchscribe_cli.local.datadir import DataDirLock

PENDING = "abcdef01" + "0" * 24
SUCCEEDED = "abcdef02" + "0" * 24
OTHER = "123456ab" + "0" * 24
BIG_TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(40_000))  # ~2 MB


class FakeApi(BaseHTTPRequestHandler):
    """GET /jobs, GET /jobs/{id}, GET /results/{id}.txt; owner `forbidden` gets API Gateway's 403,
    owner `flaky` a 503 every time (with Retry-After: 0)."""

    protocol_version = "HTTP/1.1"
    hits: list[str] = []

    def jobs(self) -> list[dict[str, Any]]:
        base = f"http://127.0.0.1:{self.server.server_port}"  # type: ignore[attr-defined]
        now = time.time()

        def job(job_id: str, status: str, minutes_ago: float) -> dict[str, Any]:
            """What the real API answers (the core's JobView), so the CLI reads what it will meet."""
            done = status == "succeeded"
            result = ResultView(
                language="en",
                duration_seconds=3.0,
                engine="faster-whisper",
                model="tiny.en",
                compute_seconds=0.5,
                real_time_factor=0.17,
                urls={"txt": f"{base}/results/{job_id}.txt"},
                urls_expire_at=iso(now + 3600),
            )
            view = JobView(
                job_id=job_id,
                status=JobStatus(status),
                priority="normal",
                progress=100 if done else 0,
                attempt=1 if done else 0,
                created_at=iso(now - minutes_ago * 60),
                updated_at=iso(now),
                input=InputView(filename="talk.mp3", content_type="audio/mpeg", size_bytes=1000),
                options=JobOptions(),
                result=result if done else None,
            )
            return view.model_dump(mode="json")

        return [job(OTHER, "succeeded", 1), job(SUCCEEDED, "succeeded", 5), job(PENDING, "pending", 10)]

    def do_GET(self) -> None:
        FakeApi.hits.append(self.path)
        owner = self.headers.get("X-Batchscribe-Owner")
        if owner == "forbidden":
            return self.send(403, {"message": "The security token included in the request is expired"})
        if owner == "flaky":
            return self.send(503, {"message": "Service Unavailable"}, {"Retry-After": "0"})
        split = urlsplit(self.path)
        if split.path == "/jobs":
            query = parse_qs(split.query)
            start, limit = int(query.get("next_token", ["0"])[0]), int(query["limit"][0])
            jobs = self.jobs()
            more = start + limit < len(jobs)
            return self.send(
                200, {"jobs": jobs[start : start + limit], "next_token": str(start + limit) if more else None}
            )
        if split.path.startswith("/results/"):
            return self.send(200, BIG_TEXT, {"Content-Type": "text/plain; charset=utf-8"})
        by_id = {j["job_id"]: j for j in self.jobs()}
        job_id = split.path.removeprefix("/jobs/")
        if job_id in by_id:
            return self.send(200, by_id[job_id])
        return self.send(404, {"error": {"code": "job_not_found", "message": f"job {job_id!r} not found"}})

    def send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        for k, v in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once closed


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


# no AWS configuration at all: no region, no credentials, no profile
NO_AWS = {
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
    **dict.fromkeys(("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), None),
    **dict.fromkeys(("AWS_SESSION_TOKEN", "AWS_PROFILE", "BATCHSCRIBE_API"), None),
}
EXECUTE_API = "https://abc123.execute-api.eu-west-1.amazonaws.com/v1"


NO_STACK_HOME = str(Path(tempfile.gettempdir()) / "batchscribe-cli-errors-no-stack")


def cli_env(extra: dict[str, str | None] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHSCRIBE_")}
    env["XDG_DATA_HOME"] = NO_STACK_HOME  # no local stack runs on its default data folder
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run(
    *args: str, env: dict[str, str | None] | None = None, prelude: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "batchscribe_cli", *args]
    if prelude:  # run main() after some setup (e.g. hiding an installed package)
        argv = [
            sys.executable,
            "-c",
            f"{prelude}; from batchscribe_cli.cli import main; raise SystemExit(main())",
            *args,
        ]
    return subprocess.run(argv, env=cli_env(env), capture_output=True, text=True, timeout=60, cwd=cwd)


# (case, arguments, environment, exit status, what stderr says); {api}, {closed}, {busy}, {tmp}
# are filled in by the test
CASES: list[tuple[str, list[str], dict[str, str | None], int, str]] = [
    ("api url without a scheme", ["list", "--api", EXECUTE_API.removeprefix("https://")], {}, 2, "has no scheme"),
    ("local url without a scheme", ["status", PENDING, "--api", "127.0.0.1:8000"], {}, 2, "http://127.0.0.1:8000"),
    ("no api given", ["list"], {}, 2, "no API to talk to"),
    ("api unreachable", ["list", "--api", "http://127.0.0.1:{closed}"], {}, 3, "batchscribe local up"),
    ("--stack with no region", ["list", "--stack", "Batchscribe"], NO_AWS, 3, "no AWS region"),
    ("deployed api, no region", ["list", "--api", "https://api.example.com/v1"], NO_AWS, 3, "no AWS region"),
    ("deployed api, no credentials", ["list", "--api", EXECUTE_API], NO_AWS, 3, "no AWS credentials"),
    ("unknown aws profile", ["list", "--stack", "B", "--profile", "nope"], NO_AWS, 3, "could not be found"),
    ("-o into a missing folder", ["result", SUCCEEDED, "-o", "{tmp}/missing/t.txt", "--api", "{api}"], {}, 2, "mkdir"),
    ("-o is a folder", ["wait", SUCCEEDED, "-o", "{tmp}", "--api", "{api}"], {}, 2, "is a folder"),
    ("input file missing", ["submit", "{tmp}/nope.mp3", "--api", "{api}"], {}, 2, "does not exist"),
    ("--format without --wait", ["submit", "{empty}", "--format", "json", "--api", "{api}"], {}, 2, "without --wait"),
    ("input file empty", ["submit", "{empty}", "--api", "{api}"], {}, 2, "is empty (0 bytes)"),
    ("unsupported scheme", ["submit", "ftp://example.com/a.mp3", "--api", "{api}"], {}, 2, "ftp:// URLs are not"),
    ("malformed job id", ["status", "xyz", "--api", "{api}"], {}, 2, "not a job id"),
    ("too short a prefix", ["status", "abcde", "--api", "{api}"], {}, 2, "at least 6"),
    ("ambiguous prefix", ["status", "abcdef", "--api", "{api}"], {}, 2, "more than one"),
    ("unknown prefix", ["cancel", "fedcba", "--api", "{api}"], {}, 1, "none of your jobs"),
    ("job not found", ["status", "0" * 32, "--api", "{api}"], {}, 1, "job_not_found"),
    ("job not finished", ["result", PENDING, "--api", "{api}"], {}, 1, "still pending"),
    ("access denied", ["list", "--api", "{api}", "--owner", "forbidden"], {}, 3, "token included in the request"),
    ("server error after retries", ["list", "--api", "{api}", "--owner", "flaky"], {}, 1, "HTTP 503"),
    ("bad --since", ["list", "--since", "yesterday", "--api", "{api}"], {}, 2, "--since"),
    ("invalid BATCHSCRIBE_ setting", ["list", "--api", "{api}"], {"BATCHSCRIBE_PROGRESS": "maybe"}, 2, "PROGRESS"),
    ("busy port for local up", ["local", "up", "--port", "{busy}"], {}, 3, "already in use"),
    ("local status, none running", ["local", "status", "--data-dir", "{tmp}"], {}, 3, "no local stack is running"),
]


@pytest.mark.parametrize(("args", "env", "code", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_error_is_one_line_with_the_documented_exit_status(
    args: list[str],
    env: dict[str, str | None],
    code: int,
    says: str,
    api: str,
    closed_port: int,
    busy_port: int,
    tmp_path: Path,
) -> None:
    (tmp_path / "empty.wav").touch()
    filled = [
        a.format(api=api, closed=closed_port, busy=busy_port, tmp=tmp_path, empty=tmp_path / "empty.wav") for a in args
    ]

    out = run(*filled, env=env, cwd=tmp_path)  # a folder of the user's: no checkout's cdk.json here

    assert_one_error(out, code, says)


def test_local_up_on_a_data_folder_in_use_names_the_folder_and_the_running_stack(tmp_path: Path) -> None:
    held = DataDirLock(tmp_path).acquire()  # as a running stack holds it
    held.publish("http://127.0.0.1:8123", "http://127.0.0.1:9000")
    try:
        out = run("local", "up", "--port", "0", "--data-dir", str(tmp_path))
    finally:
        held.release()

    assert_one_error(out, EXIT_UNAVAILABLE, f"another local stack is running on the data folder {tmp_path.resolve()}")
    assert "http://127.0.0.1:8123" in out.stderr and "batchscribe local down --data-dir" in out.stderr


def test_stack_from_a_checkout_takes_its_deploy_region_before_saying_what_is_missing() -> None:
    """In the checkout, --stack looks in the region cdk.json deploys to (as `cdk deploy` and
    `cdk destroy` do), so with no AWS configuration the first thing missing is the credentials."""
    out = run("list", "--stack", "Batchscribe", env=NO_AWS, cwd=Path(__file__).resolve().parents[2])

    assert_one_error(out, 3, "no AWS credentials to look up the stack 'Batchscribe'")


def assert_one_error(out: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == code, out.stderr
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), out.stderr
    assert len(lines) == 1 or lines[1].startswith("hint: "), out.stderr
    assert says in out.stderr


def test_every_exit_status_used_is_documented_in_the_help() -> None:
    documented = {code for code, _ in EXIT_CODES}
    assert {0, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED, EXIT_PIPE} <= documented
    assert {code for _, _, _, code, _ in CASES} <= documented
    help_text = run("--help").stdout
    assert "exit codes:" in help_text
    for code, _ in EXIT_CODES:
        assert f"\n  {code} " in help_text


def test_server_errors_are_retried_before_giving_up(api: str) -> None:
    FakeApi.hits.clear()
    run("list", "--api", api, "--owner", "flaky")
    assert len(FakeApi.hits) == 6  # the first try and five retries (urllib3's Retry)


def test_a_command_without_its_extra_says_which_to_install() -> None:
    # run from this clone: the command to run here is `pip install '.[extra]'` in the clone (an
    # installed wheel names the package: tests/e2e/test_client_install.py)
    clone = Path(__file__).resolve().parents[2]
    out = run("local", "up", "--port", "0", prelude="import sys; sys.modules['moto'] = None")
    assert_one_error(out, EXIT_UNAVAILABLE, f"pip install '.[local]' (in {clone})")
    out = run("transcribe", __file__, prelude="import sys; sys.modules['faster_whisper'] = None")
    assert_one_error(out, EXIT_UNAVAILABLE, f"pip install '.[worker]' (in {clone})")


def test_ctrl_c_during_a_wait_prints_the_command_that_resumes_it(api: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchscribe_cli", "wait", "abcdef01", "--api", api, "--format", "srt"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a child of a shell without job control may inherit SIGINT ignored: restore it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stderr is not None
    assert "pending 0%" in proc.stderr.readline()  # it is waiting (progress on stderr)

    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == EXIT_INTERRUPTED
    assert "Traceback" not in err and out == ""
    assert f"error: interrupted; job {PENDING} goes on without you" in err
    assert f"hint: resume with: batchscribe wait {PENDING} --api {api} --format srt" in err


def test_a_closed_pipe_ends_quietly(api: str) -> None:
    """`batchscribe result ID | head -1`: the reader goes away after one line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchscribe_cli", "result", "abcdef02", "--api", api],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"line 0: the quick brown fox jumps over the lazy dog\n"
    proc.stdout.close()  # what `head -1` does once it has its line

    err = proc.stderr.read().decode()
    proc.wait(timeout=30)

    assert err == ""  # no traceback, no "Exception ignored" at exit
    assert proc.returncode == EXIT_PIPE


def test_a_unique_prefix_names_the_job_and_stdout_stays_parseable(api: str) -> None:
    out = run("status", "123456", "--api", api, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["job_id"] == OTHER

    out = run("list", "--api", api, "--limit", "2", "--json")
    page = json.loads(out.stdout)
    assert [j["job_id"] for j in page["jobs"]] == [OTHER, SUCCEEDED] and page["next_token"] == "2"

    out = run("list", "--api", api, "--limit", "2")
    assert [line.split()[0] for line in out.stdout.splitlines()] == [OTHER, SUCCEEDED]
    assert "more: batchscribe list --next-token 2 --api" in out.stderr
    out = run("list", "--api", api, "--limit", "2", "--next-token", "2", "-q")
    assert out.stdout.split() == [PENDING] and out.stderr == ""

    out = run("list", "--api", api, "--since", "3m", "-q")
    assert out.stdout.split() == [OTHER]  # created 1 minute ago; the others before that


def test_the_cli_offers_the_cores_choices() -> None:
    """Each choice the job commands offer is the core's (never a copy of its literals)."""
    from batchscribe.models import ALL_FORMATS, PRIORITIES, JobStatus
    from batchscribe_cli.cli import build_parser

    def choices(command: str, flag: str) -> list[str]:
        parser = build_parser()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub = commands.choices[command]
        return next(list(a.choices or ()) for a in sub._actions if flag in a.option_strings)

    assert choices("submit", "--format") == list(ALL_FORMATS)
    assert choices("submit", "--priority") == choices("list", "--priority") == list(PRIORITIES)
    assert choices("list", "--status") == [s.value for s in JobStatus]
    assert choices("submit", "--task") == ["transcribe", "translate"]
