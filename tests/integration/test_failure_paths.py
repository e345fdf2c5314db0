"""What keeps jobs from waiting forever: the dead-letter handler and the sweeper."""

from __future__ import annotations

import json

import pytest

from batchscribe.api_models import CreateJobRequest
from batchscribe.errors import StaleAttempt
from batchscribe.jobs import JobApi
from batchscribe.lifecycle import DeadLetterOutcome, ExitCounts, Lifecycle, SweepCounts
from batchscribe.models import JobMessage, JobStatus
from batchscribe.settings import ApiSettings, LifecycleSettings
from batchscribe_cli.local import LocalContext
from harness.jobs import result_summary
from tests.conftest import Stack
from tests.fakes import Clock
from tests.helpers import create, receive_all, sqs_event


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


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
    return handler(sqs_event([{"Body": body}]), LocalContext())


# ---- dead letters --------------------------------------------------------------------


def test_dead_letter_sends_a_barely_tried_queued_job_again(svc: Lifecycle, aws_stack: Stack) -> None:
    """SQS counts receives, not attempts: a message full workers put back five times reaches
    the DLQ with the job never run. It is sent again, not failed."""
    job_id = queued_job(svc)
    assert dead_letter(job_id) == {"batchItemFailures": []}
    job = svc.repo.get(job_id)
    assert job.status is JobStatus.QUEUED and job.redrives == 1
    [message] = receive_all(aws_stack.jobs_queue_url)
    assert JobMessage.model_validate_json(message["Body"]).job_id == job_id


def test_dead_letter_fails_a_queued_job_once_its_resends_are_used(svc: Lifecycle) -> None:
    job_id = queued_job(svc)
    outcomes = [svc.dead_letter(job_id) for _ in range(svc.settings.max_redrives + 1)]
    assert outcomes == [DeadLetterOutcome.REDRIVEN] * svc.settings.max_redrives + [DeadLetterOutcome.FAILED]
    job = svc.repo.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error is not None and job.error.code == "retries_exhausted"


def test_dead_letter_requeues_a_running_job_whose_worker_is_gone(svc: Lifecycle, clock: Clock) -> None:
    job_id = queued_job(svc)
    svc.repo.claim(job_id, "w1", lease_seconds=60)
    clock.now += 120
    assert svc.dead_letter(job_id) is DeadLetterOutcome.REDRIVEN
    assert svc.repo.get(job_id).status is JobStatus.QUEUED


def test_dead_letter_fails_a_job_whose_attempts_are_used(svc: Lifecycle, clock: Clock) -> None:
    job_id = queued_job(svc)
    for _ in range(svc.settings.max_attempts):
        clock.now += 120  # the last worker's lease expired: the next claim takes over
        svc.repo.claim(job_id, "w1", lease_seconds=60)
    clock.now += 120
    assert svc.dead_letter(job_id) is DeadLetterOutcome.FAILED
    job = svc.repo.get(job_id)
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == "retries_exhausted"


def test_dead_letter_leaves_a_pending_job_to_the_sweeper(svc: Lifecycle) -> None:
    job_id = create()["job_id"]
    assert svc.dead_letter(job_id) is DeadLetterOutcome.NOT_UPLOADED
    assert svc.repo.get(job_id).status is JobStatus.PENDING


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
        svc.repo.succeed(job_id, claimed.attempt, result_summary(), None)
    else:
        svc.repo.cancel(job_id)
    before = svc.repo.get(job_id)
    dead_letter(job_id)
    assert svc.repo.get(job_id) == before


def test_dead_letter_of_a_non_job_message_is_dropped(aws_stack: Stack) -> None:
    from lambdas.dead_letter.handler import handler

    assert handler(sqs_event([{"Body": "garbage"}, {"Body": json.dumps({"job_id": "0" * 32})}]), LocalContext()) == {
        "batchItemFailures": []
    }


def test_a_killed_attempts_log_is_linked_from_the_job(svc: Lifecycle, api: JobApi, aws_stack: Stack) -> None:
    """A worker killed mid-job never records `log_key`, but its attempt's lines are already in
    the log object (the first flush is at claim): GET links it, and the failed job keeps it."""
    import requests

    from batchscribe.storage import MediaStore
    from gpu_container.worker.running import JobLog

    job_id = queued_job(svc)
    for n in range(svc.settings.max_attempts):
        job = svc.repo.claim(job_id, f"w{n}", lease_seconds=600)
        JobLog(job, f"w{n}", MediaStore(aws_stack.bucket))  # what a worker writes before it is killed
        assert svc.worker_exited(f"w{n}") == (
            ExitCounts(requeued=1) if n + 1 < svc.settings.max_attempts else ExitCounts(failed=1)
        )
    view = api.get_job(job.owner, job_id)
    assert view.status is JobStatus.FAILED and view.log_url
    log = requests.get(view.log_url, timeout=10).text
    for n in range(svc.settings.max_attempts):
        assert f"attempt {n + 1} on worker w{n}" in log


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

    assert handler({"source": "aws.events"}, LocalContext()) == {
        "upload_expired": 0,
        "requeued": 0,
        "redriven": 0,
        "queue_timeout": 0,
        "slots_freed": 0,
        "owners_running": 0,
        "max_running_per_owner": 0,
    }


# ---- queued jobs whose message was lost (issue 11, defect 1) ------------------------------


def test_a_queued_job_whose_message_was_lost_is_sent_again_then_never_stuck(
    aws_stack: Stack, svc: Lifecycle, clock: Clock
) -> None:
    """Given a queued job whose message vanished (deleted by hand, retention, a failed send),
    the sweeper re-sends it after `queued_redrive_seconds`, with a doubling wait, and fails
    it `queue_timeout` after `max_redrives` re-sends: it never stays queued forever."""
    job_id = queued_job(svc)
    base = svc.settings.queued_redrive_seconds
    assert receive_all(aws_stack.jobs_queue_url) == []  # the message is gone
    assert svc.sweep().redriven == 0  # not yet due

    clock.now += base + 1
    assert svc.sweep() == SweepCounts(redriven=1)
    [message] = receive_all(aws_stack.jobs_queue_url)
    assert JobMessage.model_validate_json(message["Body"]).job_id == job_id
    job = svc.repo.get(job_id)
    assert (job.status, job.redrives) == (JobStatus.QUEUED, 1)
    assert svc.sweep() == SweepCounts()  # idempotent: the next wait is twice as long

    clock.now += 2 * base - 2
    assert svc.sweep() == SweepCounts()
    for k in range(2, svc.settings.max_redrives + 1):
        clock.now += base * 2 ** (k - 1) + 1
        assert svc.sweep() == SweepCounts(redriven=1), k
    assert len(receive_all(aws_stack.jobs_queue_url)) == svc.settings.max_redrives - 1

    clock.now += base * 2**svc.settings.max_redrives + 1
    assert svc.sweep() == SweepCounts(queue_timeout=1)
    job = svc.repo.get(job_id)
    assert job.status is JobStatus.FAILED and job.error is not None
    assert job.error.code == "queue_timeout"
    assert receive_all(aws_stack.jobs_queue_url) == []


def test_redrive_stops_once_a_worker_claims_and_restarts_after_a_give_back(
    aws_stack: Stack, svc: Lifecycle, clock: Clock
) -> None:
    job_id = queued_job(svc)
    clock.now += svc.settings.queued_redrive_seconds + 1
    assert svc.sweep().redriven == 1
    claimed = svc.repo.claim(job_id, "w1", lease_seconds=10 * svc.settings.queued_redrive_seconds)
    assert claimed.redrives == 0  # a claim ends the queued period
    clock.now += 5 * svc.settings.queued_redrive_seconds
    assert svc.sweep() == SweepCounts()  # running with a live lease: nothing to do
    svc.repo.give_back(job_id, claimed.attempt)  # SIGTERM: a new queued period starts now
    receive_all(aws_stack.jobs_queue_url)
    assert svc.sweep() == SweepCounts()
    clock.now += svc.settings.queued_redrive_seconds + 1
    assert svc.sweep() == SweepCounts(redriven=1)


def test_a_stale_sweep_cannot_redrive_or_time_out_a_job_claimed_meanwhile(svc: Lifecycle, clock: Clock) -> None:
    from batchscribe.errors import InvalidTransition

    job_id = queued_job(svc)
    seen = svc.repo.get(job_id)
    svc.repo.claim(job_id, "w1", 60)
    with pytest.raises(InvalidTransition):
        svc.repo.redrive(job_id, seen.attempt, seen.redrives, clock.now + 100)
    assert svc.repo.get(job_id).status is JobStatus.RUNNING


def test_redrive_keeps_the_jobs_queue_routing(aws_stack: Stack, clock: Clock) -> None:
    """Small uploads go to the CPU pool's queue: a re-sent message goes there too."""
    import boto3

    small_url = boto3.client("sqs").create_queue(QueueName=f"{aws_stack.table}-small")["QueueUrl"]
    settings = LifecycleSettings.from_env(aws_stack.env).model_copy(
        update={"small_jobs_queue_url": small_url, "small_job_max_bytes": 5000}
    )
    svc = Lifecycle.from_settings(settings, clock=clock)
    small, large = create(size=1000)["job_id"], create(size=9000)["job_id"]
    svc.repo.enqueue(small, 1000)
    svc.repo.enqueue(large, 9000)
    clock.now += settings.queued_redrive_seconds + 1

    assert svc.sweep().redriven == 2

    assert [JobMessage.model_validate_json(m["Body"]).job_id for m in receive_all(small_url)] == [small]
    assert [JobMessage.model_validate_json(m["Body"]).job_id for m in receive_all(aws_stack.jobs_queue_url)] == [large]


def _request() -> CreateJobRequest:

    return CreateJobRequest(filename="a.wav", content_type="audio/wav", size_bytes=10)
