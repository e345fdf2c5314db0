"""What keeps jobs from waiting forever: the dead-letter handler and the sweeper."""

from __future__ import annotations

import json

import pytest

from batchscribe.api_models import CreateJobRequest
from batchscribe.errors import StaleAttempt
from batchscribe.jobs import JobApi
from batchscribe.lifecycle import DeadLetterOutcome, Lifecycle, SweepCounts
from batchscribe.models import JobMessage, JobStatus, ResultSummary
from batchscribe.settings import ApiSettings, LifecycleSettings
from tests.conftest import LambdaContextStub, Stack
from tests.helpers import create, receive_all, sqs_event


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(aws_stack: Stack, clock: Clock) -> Lifecycle:
    return Lifecycle.from_settings(LifecycleSettings.from_env(aws_stack.env), clock=clock)


@pytest.fixture
def api(aws_stack: Stack, clock: Clock) -> JobApi:
    return JobApi.from_settings(ApiSettings.from_env(aws_stack.env), clock=clock)


def queued_job(svc: Lifecycle) -> str:
    job = create()
    svc.repo.enqueue(job["job_id"], 1000)
    return str(job["job_id"])


def dead_letter(job_id: str) -> dict:
    from lambdas.dead_letter.handler import handler

    body = JobMessage(job_id=job_id).model_dump_json()
    return handler(sqs_event([{"Body": body}]), LambdaContextStub())


# ---- dead letters --------------------------------------------------------------------


def test_dead_letter_fails_a_queued_job_with_retries_exhausted(svc: Lifecycle) -> None:
    job_id = queued_job(svc)
    assert dead_letter(job_id) == {"batchItemFailures": []}
    job = svc.repo.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error is not None and job.error.code == "retries_exhausted"


def test_dead_letter_fails_a_running_job_whose_worker_is_gone(svc: Lifecycle, clock: Clock) -> None:
    job_id = queued_job(svc)
    svc.repo.claim(job_id, "w1", lease_seconds=60)
    clock.now += 120
    assert svc.dead_letter(job_id) is DeadLetterOutcome.FAILED
    assert svc.repo.get(job_id).status is JobStatus.FAILED


def test_dead_letter_leaves_a_job_a_live_worker_holds(svc: Lifecycle) -> None:
    job_id = queued_job(svc)
    svc.repo.claim(job_id, "w1", lease_seconds=600)
    assert svc.dead_letter(job_id) is DeadLetterOutcome.LIVE_WORKER
    assert svc.repo.get(job_id).status is JobStatus.RUNNING


@pytest.mark.parametrize("end", ["succeed", "cancel"])
def test_dead_letter_never_touches_a_terminal_job(svc: Lifecycle, end: str) -> None:
    job_id = queued_job(svc)
    claimed = svc.repo.claim(job_id, "w1", 60)
    if end == "succeed":
        svc.repo.succeed(
            job_id,
            claimed.attempt,
            ResultSummary(
                language="en",
                duration_seconds=1,
                outputs={},
                engine="e",
                model="m",
                compute_seconds=1,
                real_time_factor=1,
            ),
            None,
        )
    else:
        svc.repo.cancel(job_id)
    before = svc.repo.get(job_id)
    dead_letter(job_id)
    assert svc.repo.get(job_id) == before


def test_dead_letter_of_a_non_job_message_is_dropped(aws_stack: Stack) -> None:
    from lambdas.dead_letter.handler import handler

    assert handler(
        sqs_event([{"Body": "garbage"}, {"Body": json.dumps({"job_id": "0" * 32})}]), LambdaContextStub()
    ) == {"batchItemFailures": []}


# ---- sweeper -------------------------------------------------------------------------


def test_sweeper_fails_pending_jobs_whose_upload_window_closed(svc: Lifecycle, api: JobApi, clock: Clock) -> None:
    stale = api.create_job("owner", _request())[0].job_id
    clock.now += api.settings.upload_window_seconds + 1
    fresh = api.create_job("owner", _request())[0].job_id

    assert svc.sweep() == SweepCounts(upload_expired=1, requeued=0)

    job = svc.repo.get(stale)
    assert job.status is JobStatus.FAILED and job.error is not None
    assert job.error.code == "upload_expired"
    assert svc.repo.get(fresh).status is JobStatus.PENDING
    assert svc.sweep() == SweepCounts(upload_expired=0, requeued=0)


def test_sweeper_requeues_a_running_job_whose_lease_expired(aws_stack: Stack, svc: Lifecycle, clock: Clock) -> None:
    job_id = queued_job(svc)
    lost = svc.repo.claim(job_id, "dead-worker", lease_seconds=60)
    live_id = queued_job(svc)
    svc.repo.claim(live_id, "live-worker", lease_seconds=600)
    clock.now += 61

    assert svc.sweep() == SweepCounts(upload_expired=0, requeued=1)

    job = svc.repo.get(job_id)
    assert job.status is JobStatus.QUEUED and job.worker is None
    assert svc.repo.get(live_id).status is JobStatus.RUNNING
    assert [JobMessage.model_validate_json(m["Body"]).job_id for m in receive_all(aws_stack.jobs_queue_url)] == [job_id]
    # the worker that lost its lease comes back: its writes are fenced off
    svc.repo.claim(job_id, "new-worker", 60)
    with pytest.raises(StaleAttempt):
        svc.repo.heartbeat(job_id, lost.attempt, 60)


def test_sweeper_handler_runs_on_its_schedule_event(aws_stack: Stack) -> None:
    from lambdas.sweeper.handler import handler

    assert handler({"source": "aws.events"}, LambdaContextStub()) == {"upload_expired": 0, "requeued": 0}


def _request() -> CreateJobRequest:

    return CreateJobRequest(filename="a.wav", content_type="audio/wav", size_bytes=10)
