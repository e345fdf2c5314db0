"""The operator's job metrics, as CloudWatch reads them: the real notify handler, fed by the
local stack's stream event source from the jobs table that the repository's conditional writes
change (on moto), prints one EMF line per metric with its own dimensions, one log line per end
and claim (what the saved queries read), and ADDs each end to the hourly counters. Every value is
known: the repository runs on a clock the test moves.

Duplicates: a transition delivered twice is refused by its condition and writes no stream
record, so nothing counts it again; a record that writes a terminal job again (its callback's
progress) is no end; a stream batch that fails before its events are sent is retried (bisected)
and counts each end once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from batchscribe.errors import INVALID_MEDIA, InvalidTransition
from batchscribe.events import EventPublisher
from batchscribe.models import ErrorInfo, ResultSummary
from batchscribe.outcomes import (
    JOB_ATTEMPTS_METRIC,
    JOB_ENDED_EVENT,
    JOB_EXPIRED_EVENT,
    JOB_STARTED_EVENT,
    JOBS_ENDED_METRIC,
    TIME_QUEUED_METRIC,
    TIME_RUNNING_METRIC,
    JobEnd,
)
from batchscribe.repository import JobRepository
from batchscribe.repository.stats import StatsCounters, hour_of
from batchscribe.settings import METRICS_NAMESPACE, NotifySettings, RoutingSettings
from batchscribe_cli.local.event_sources import StreamEventSource
from tests.conftest import Stack, reset_caches
from tests.fakes import Clock
from tests.helpers import create, emf_points

GPU_MODEL, CPU_MODEL = "large-v3-turbo", "tiny.en"
SMALL = 1000  # uploads up to this size run on the CPU pool
BIG = 10**6


@dataclass
class Notify:
    """The notify function behind the table's stream, and the repository on a movable clock."""

    stack: Stack
    source: StreamEventSource
    repo: JobRepository
    clock: Clock
    lines: list[str]
    t0: float  # the start of the hour the jobs end in, plus 100 s

    def at(self, offset: float) -> None:
        self.clock.now = self.t0 + offset

    def drain(self) -> int:
        """Deliver everything the stream holds now (the counters' own writes included)."""
        total = 0
        while n := self.source.poll():
            total += n
        return total


@pytest.fixture
def notify(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Notify]:
    """A deployment with a CPU pool for small uploads (its model tiny.en) and large-v3-turbo on
    the GPU pool: the notify function reads both to name a job's pool and model."""
    from lambdas.notify.handler import handler

    monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")  # see test_local_stream_source
    routing = RoutingSettings(
        jobs_queue_url=aws_stack.jobs_queue_url,
        small_jobs_queue_url=aws_stack.jobs_queue_url + "-small",
        small_job_max_bytes=SMALL,
        small_job_model=CPU_MODEL,
    )
    env = NotifySettings(table_name=aws_stack.table, routing=routing, default_model=GPU_MODEL).to_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_caches()
    lines: list[str] = []
    source = StreamEventSource(aws_stack.table, handler, stopping=threading.Event(), say=lines.append)
    source.open()
    # a clock in the next hour: every end below falls in one known hour of the counters
    t0 = 3600.0 * (hour_of(time.time()) + 1) + 100
    clock = Clock(t0)
    yield Notify(aws_stack, source, JobRepository(aws_stack.table, clock), clock, lines, t0)


def _result(model: str) -> ResultSummary:
    return ResultSummary(
        language="en",
        duration_seconds=3,
        outputs={},
        engine="faster-whisper",
        model=model,
        compute_seconds=1,
        real_time_factor=0.3,
    )


def _queued(n: Notify, size: int, **kw: Any) -> str:
    job_id = str(create(size=size, **kw)["job_id"])
    n.at(0)
    n.repo.enqueue(job_id, size)
    return job_id


def _log_lines(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """The fields of the structured log lines with this `event` (what Logs Insights reads)."""
    return [vars(r) for r in caplog.records if getattr(r, "event", None) == event]


def _points(output: str, name: str, *dims: str) -> list[tuple[Any, ...]]:
    """Each value of `name` as (its dimensions in this order..., value), sorted; the namespace
    and the `service` dimension checked, and that the line declares exactly these dimensions."""
    points = emf_points(output, name)
    assert all(p.namespace == METRICS_NAMESPACE and p.dimensions["service"] == "jobs" for p in points), points
    assert all(set(p.dimensions) == {"service", *dims} for p in points), points
    return sorted((*(p.dimensions[d] for d in dims), p.value) for p in points)


def test_each_end_and_claim_is_one_metric_with_its_dimensions_a_log_line_and_a_count(
    notify: Notify, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    n, repo = notify, notify.repo
    # Given: a GPU job that succeeds on its first attempt (queued 5 s, ran 30 s)
    first = _queued(n, BIG)
    n.at(5)
    repo.claim(first, "w", 60)
    n.at(35)
    repo.succeed(first, 1, _result(GPU_MODEL), None)
    # a small high-priority job on the CPU pool, given back once, that succeeds on its second attempt
    second = _queued(n, SMALL, priority="high")
    n.at(2)
    repo.claim(second, "w", 60)
    n.at(10)
    repo.give_back(second, 1)
    n.at(14)
    repo.claim(second, "w", 60)
    n.at(20)
    repo.succeed(second, 2, _result(CPU_MODEL), None)
    # a GPU job whose media is invalid, one failed with a code outside the closed set, a cancel
    bad = _queued(n, BIG)
    n.at(1)
    repo.claim(bad, "w", 60)
    n.at(3)
    repo.fail(bad, ErrorInfo(code=INVALID_MEDIA, message="x"), attempt=1)
    odd = _queued(n, BIG)
    n.at(50)
    repo.fail(odd, ErrorInfo(code="disk_on_fire", message="x"))
    gone = str(create(size=BIG)["job_id"])
    n.at(60)
    repo.cancel(gone)

    # When the stream reaches the notify function
    capsys.readouterr()
    caplog.clear()
    assert n.drain() > 0
    out = capsys.readouterr().out

    # Then one JobsEnded per end, by status x pool x model x error code
    assert _points(out, JOBS_ENDED_METRIC, "status", "pool", "model", "error_code") == [
        ("cancelled", "gpu", GPU_MODEL, "none", 1.0),
        ("failed", "gpu", GPU_MODEL, "invalid_media", 1.0),
        ("failed", "gpu", GPU_MODEL, "other", 1.0),
        ("succeeded", "cpu", CPU_MODEL, "none", 1.0),
        ("succeeded", "gpu", GPU_MODEL, "none", 1.0),
    ]
    # the attempts each success took; the time from the last claim for each end from running
    assert _points(out, JOB_ATTEMPTS_METRIC, "pool", "model") == [("cpu", CPU_MODEL, 2.0), ("gpu", GPU_MODEL, 1.0)]
    assert _points(out, TIME_RUNNING_METRIC, "pool") == [("cpu", 6.0), ("gpu", 2.0), ("gpu", 30.0)]
    # the wait of each claim: from queued, or from the give-back for a second attempt
    assert _points(out, TIME_QUEUED_METRIC, "pool", "priority") == [
        ("cpu", "high", 2.0),
        ("cpu", "high", 4.0),
        ("gpu", "normal", 1.0),
        ("gpu", "normal", 5.0),
    ]
    # and a log line for each end and claim, with the fields the saved queries read
    ended = {d["job_id"]: d for d in _log_lines(caplog, JOB_ENDED_EVENT)}
    assert set(ended) == {first, second, bad, odd, gone} and len(_log_lines(caplog, JOB_STARTED_EVENT)) == 4
    assert {k: ended[second][k] for k in ("status", "pool", "model", "error_code", "attempts", "priority")} == {
        "status": "succeeded",
        "pool": "cpu",
        "model": CPU_MODEL,
        "error_code": "none",
        "attempts": 2,
        "priority": "high",
    }
    assert (ended[bad]["error_code"], ended[bad]["running_seconds"]) == (INVALID_MEDIA, 2.0)
    # and the hour's counters hold the same ends, and the five created records' expiry
    [(_, counts)] = list(StatsCounters(n.stack.table).hours(hour_of(n.clock.now), hour_of(n.clock.now)))
    assert {k: v for k, v in counts.items() if not k.startswith("expiring")} == {
        f"ended|cancelled|gpu|{GPU_MODEL}|none": 1,
        f"ended|failed|gpu|{GPU_MODEL}|invalid_media": 1,
        f"ended|failed|gpu|{GPU_MODEL}|other": 1,
        f"ended|succeeded|cpu|{CPU_MODEL}|none": 1,
        f"ended|succeeded|gpu|{GPU_MODEL}|none": 1,
        f"attempts|cpu|{CPU_MODEL}|2": 1,
        f"attempts|gpu|{GPU_MODEL}|1": 1,
    }
    ttl_hour = hour_of(repo.get(first).ttl)
    expiring = StatsCounters(n.stack.table).hours(ttl_hour - 1, ttl_hour + 1)
    assert sum(c.get("expiring", 0) for _, c in expiring) == 5


def _running(n: Notify) -> str:
    job_id = _queued(n, BIG)
    n.repo.claim(job_id, "w", 60)
    return job_id


def _ended_counts(n: Notify) -> int:
    hour = hour_of(n.clock.now)
    return sum(
        v for _, c in StatsCounters(n.stack.table).hours(hour, hour) for k, v in c.items() if k.startswith("ended")
    )


def test_a_duplicate_end_writes_no_stream_record_and_counts_nothing(
    notify: Notify, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    n, repo = notify, notify.repo
    job_id = str(create(callback_url="https://hooks.example.com/x")["job_id"])
    n.at(0)
    repo.enqueue(job_id, BIG)
    repo.claim(job_id, "w", 60)
    repo.succeed(job_id, 1, _result(GPU_MODEL), None)
    n.drain()
    assert _ended_counts(n) == 1
    capsys.readouterr()
    caplog.clear()

    # When the same end is delivered again (a redelivered job message, the sweeper, a late cancel)
    for duplicate in (
        lambda: repo.succeed(job_id, 1, _result(GPU_MODEL), None),
        lambda: repo.fail(job_id, ErrorInfo(code=INVALID_MEDIA, message="x"), attempt=1),
        lambda: repo.cancel(job_id),
    ):
        with pytest.raises(InvalidTransition):
            duplicate()
    # Then no stream record exists for any of them
    assert n.drain() == 0
    # And a write that keeps the job terminal (its callback's first try) is seen, yet no end
    callback = repo.get(job_id).callback
    assert callback is not None and repo.record_callback(job_id, callback.model_copy(update={"attempts": 1}), 0)
    assert n.drain() == 1
    out = capsys.readouterr().out
    assert emf_points(out, JOBS_ENDED_METRIC) == [] and emf_points(out, JOB_ATTEMPTS_METRIC) == []
    assert _log_lines(caplog, JOB_ENDED_EVENT) == []
    assert _ended_counts(n) == 1


def test_a_batch_that_fails_before_its_events_are_sent_counts_each_end_once_when_retried(
    notify: Notify,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lambdas.notify.handler as notify_handler

    n, repo = notify, notify.repo
    jobs = [_running(n) for _ in range(2)]
    n.drain()
    calls: list[int] = []

    class FlakyBus(EventPublisher):
        """EventBridge refuses the first batch, then accepts."""

        def publish(self, changes: Any) -> int:
            changes = list(changes)
            calls.append(len(changes))
            if len(calls) == 1:
                raise RuntimeError(f"{len(changes)} events were not accepted; the batch is retried")
            return super().publish(changes)

    monkeypatch.setattr(notify_handler, "EventPublisher", FlakyBus)
    for job_id in jobs:
        repo.succeed(job_id, 1, _result(GPU_MODEL), None)
    capsys.readouterr()
    caplog.clear()

    # When the batch of both ends fails, is bisected and each half is retried
    assert n.drain() >= 2
    out = capsys.readouterr().out

    assert calls[:3] == [2, 1, 1]
    assert any("bisected and retried" in line for line in n.lines)
    # Then each end counts once: the failed try recorded nothing
    assert (
        _points(out, JOBS_ENDED_METRIC, "status", "pool", "model", "error_code")
        == [("succeeded", "gpu", GPU_MODEL, "none", 1.0)] * 2
    )
    assert sorted(d["job_id"] for d in _log_lines(caplog, JOB_ENDED_EVENT)) == sorted(jobs)
    assert _ended_counts(n) == 2


def test_a_record_the_ttl_deleted_is_one_expired_line(notify: Notify, caplog: pytest.LogCaptureFixture) -> None:
    import boto3

    job_id = str(create()["job_id"])
    notify.drain()
    caplog.clear()
    boto3.client("dynamodb").delete_item(TableName=notify.stack.table, Key={"job_id": {"S": job_id}})
    assert notify.drain() == 1
    [line] = _log_lines(caplog, JOB_EXPIRED_EVENT)
    assert (line["job_id"], line["status"]) == (job_id, "pending")


def test_no_metric_line_is_printed_where_metrics_are_disabled(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local stack runs the stream handler in its own process with POWERTOOLS_METRICS_DISABLED
    set: its terminal (and a benchmark's output) gets no EMF lines, as on AWS they go to the logs."""
    from batchscribe.job_metrics import emit_end

    end = JobEnd(
        job_id="j", status="succeeded", pool="cpu", model="tiny.en", error_code="none", priority="normal",
        attempts=1, running_seconds=3.0, ttl=0,
    )  # fmt: skip
    emit_end(end)
    assert emf_points(capsys.readouterr().out, JOBS_ENDED_METRIC)  # printed by default
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    emit_end(end)
    assert capsys.readouterr().out == ""
