"""`batchscribe stats` on the local stack over a seeded mix of jobs whose answers are known:
successes on the first, second and third attempt, failures with several codes, a cancel, jobs
left waiting and one whose record expires within the day. Every end reaches the counters through
the real stream -> notify handler; the answer comes through the real API handler, behind the
local gateway's check of the stats policy.

Seeded through the repository (the same conditional writes the worker, the sweeper and the
dead-letter handler make) rather than by real runs: a second and third attempt and each failure
code would need a fault injected per job and minutes each. The waiting jobs are real uploads
(no worker runs: they stay queued)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from batchscribe.errors import INVALID_MEDIA, QUEUE_TIMEOUT, UPLOAD_EXPIRED, InvalidTransition
from batchscribe.models import ErrorInfo, JobStatus, ResultSummary
from batchscribe.repository import JobRepository
from batchscribe_cli.cli import main
from batchscribe_cli.client import ApiError, Client
from batchscribe_cli.local import LocalStack
from tests.e2e.waits import running_stack, wait_until

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[2] / "batchscribe_cli" / "samples" / "sample.mp3"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from running_stack(tmp_path_factory, name="stats", max_workers=0)


def _result() -> ResultSummary:
    return ResultSummary(
        language="en",
        duration_seconds=1,
        outputs={},
        engine="faster-whisper",
        model="tiny.en",
        compute_seconds=1,
        real_time_factor=1,
    )


def _queued(repo: JobRepository, client: Client) -> str:
    job_id = client.create_job(SAMPLE)["job_id"]
    repo.enqueue(job_id, SAMPLE.stat().st_size)
    return job_id


def _succeed_on(repo: JobRepository, job_id: str, attempt: int) -> None:
    for n in range(1, attempt + 1):
        repo.claim(job_id, "w", 60)
        if n < attempt:
            repo.give_back(job_id, n)
    repo.succeed(job_id, attempt, _result(), None)


def _stats(stack: LocalStack, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["stats", "--api", stack.url, *args])
    return code, out.getvalue()


def test_stats_answers_the_operators_questions_over_a_known_mix(stack: LocalStack) -> None:
    assert stack.resources is not None
    repo = JobRepository(stack.resources.table)
    client = Client(stack.url, owner="erin")
    # Given: successes on attempts 1, 2 and 3; two invalid_media, one queue_timeout, one upload_expired; a cancel
    for attempt in (1, 2, 3):
        _succeed_on(repo, _queued(repo, client), attempt)
    for _ in range(2):
        job_id = _queued(repo, client)
        repo.claim(job_id, "w", 60)
        repo.fail(job_id, ErrorInfo(code=INVALID_MEDIA, message="x"), attempt=1)
    repo.fail(_queued(repo, client), ErrorInfo(code=QUEUE_TIMEOUT, message="x"))
    pending = client.create_job(SAMPLE)["job_id"]
    repo.fail(pending, ErrorInfo(code=UPLOAD_EXPIRED, message="x"), only_from=frozenset({JobStatus.PENDING}))
    # a duplicate delivery of the same end is refused, and writes nothing the stream could count
    with pytest.raises(InvalidTransition):
        repo.fail(pending, ErrorInfo(code=UPLOAD_EXPIRED, message="x"))
    client.cancel(client.create_job(SAMPLE)["job_id"])
    # and two real uploads left waiting (no worker), the first the older
    waiting = [client.submit(SAMPLE)["job_id"] for _ in range(2)]
    wait_until(lambda: all(client.get(j)["status"] == "queued" for j in waiting), timeout=60)
    # and one record that expires within the day
    soon = repo.get(pending).model_copy(
        update={"job_id": "f" * 32, "status": JobStatus.PENDING, "error": None, "ttl": int(time.time()) + 7200}
    )
    repo.create(soon)

    report: dict[str, Any] = {}

    def counted() -> bool:
        code, out = _stats(stack, "--json")
        report.update(json.loads(out))
        return code == 0 and sum(report["ended"].values()) == 8 and report["expiring_next_day"] >= 1

    wait_until(counted, timeout=60)
    # Then the answers are the mix's
    assert report["ended"] == {"cancelled": 1, "failed": 4, "succeeded": 3}
    assert [(f["code"], f["pool"], f["model"], f["jobs"]) for f in report["failures"]] == [
        (INVALID_MEDIA, "gpu", "tiny.en", 2),
        (QUEUE_TIMEOUT, "gpu", "tiny.en", 1),
        (UPLOAD_EXPIRED, "gpu", "tiny.en", 1),
    ]
    [attempts] = report["attempts_to_succeed"]
    assert (attempts["pool"], attempts["model"], attempts["jobs"], attempts["mean"]) == ("gpu", "tiny.en", 3, 2.0)
    assert attempts["distribution"] == {"1": 1, "2": 1, "3": 1}
    assert [w["job_id"] for w in report["oldest_waiting"]] == waiting
    assert {w["priority"] for w in report["oldest_waiting"]} == {"normal"}
    assert report["expiring_next_day"] == 1
    # and the human output is a table of the same
    code, text = _stats(stack)
    rows = [line.split() for line in text.splitlines()]
    assert code == 0 and ["invalid_media", "gpu", "tiny.en", "2"] in rows, text
    assert ["gpu", "tiny.en", "3", "2.00", "1:1", "2:1", "3:1"] in rows and waiting[0] in text, text
    print(text)


def test_only_a_stats_principal_may_read_the_stats(stack: LocalStack) -> None:
    """An owner holds the invoke policy only: the stats route is refused (403, as API Gateway
    answers), while its own routes still answer; the local identity holds the stats policy."""
    with pytest.raises(ApiError) as refused:
        Client(stack.url, owner="mallory").request("GET", "/admin/stats")
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    assert Client(stack.url, owner="mallory").list()["jobs"] == []
    assert Client(stack.url).request("GET", "/admin/stats")["hours"] == 24
    code = main(["stats", "--api", stack.url, "--owner", "mallory"])
    assert code == 3  # unavailable: not allowed, with the hint to attach StatsPolicyArn
