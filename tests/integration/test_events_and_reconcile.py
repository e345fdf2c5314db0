"""Job Status Change events, small-job routing, waking the scaler, and the Batch reconciler."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer

from batchscribe.lifecycle import ExitCounts, Lifecycle
from batchscribe.models import JobMessage, JobStatus
from batchscribe.settings import LifecycleSettings
from batchscribe_cli.local import LocalContext
from tests.conftest import Stack
from tests.helpers import create, deliver_uploads, post_upload, receive_all

_ser = TypeSerializer()


def _image(job: Any) -> dict[str, Any]:
    from batchscribe.repository import job_item

    return job_item(job)


def test_terminal_statuses_are_published_once(aws_stack: Stack) -> None:
    from lambdas.notify.handler import handler

    events = boto3.client("events")
    sqs = boto3.client("sqs")
    target = sqs.create_queue(QueueName="subscriber")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=target, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(
        Name="jobs",
        EventPattern=json.dumps({"source": ["batchscribe"], "detail-type": ["Job Status Change"]}),
    )
    events.put_targets(Rule="jobs", Targets=[{"Id": "q", "Arn": arn}])

    svc = Lifecycle.from_settings(LifecycleSettings.from_env(aws_stack.env))
    job_id = create()["job_id"]
    pending = svc.repo.get(job_id)
    cancelled = svc.repo.cancel(job_id)
    records = [
        {"eventName": "INSERT", "dynamodb": {"NewImage": _image(pending)}},  # not terminal: nothing
        {"eventName": "MODIFY", "dynamodb": {"OldImage": _image(pending), "NewImage": _image(cancelled)}},
        {"eventName": "MODIFY", "dynamodb": {"OldImage": _image(cancelled), "NewImage": _image(cancelled)}},
        {"eventName": "INSERT", "dynamodb": {"NewImage": {"job_id": {"S": "idem#x"}}}},  # not a job
    ]

    assert handler({"Records": records}, LocalContext()) == {"published": 1, "callbacks": 0}

    got = [json.loads(m["Body"]) for m in receive_all(target)]
    assert len(got) == 1
    assert got[0]["detail-type"] == "Job Status Change"
    assert got[0]["detail"]["job_id"] == job_id
    assert (got[0]["detail"]["status"], got[0]["detail"]["previous_status"]) == ("cancelled", "pending")


def test_the_event_and_the_webhook_say_the_same_of_a_job(aws_stack: Stack) -> None:
    """One summary of a finished job (JobSummary): the status-change event's detail is the
    webhook's body plus the status it came from, for a success and a failure alike."""
    from batchscribe.events import status_change
    from batchscribe.models import ErrorInfo, ResultSummary
    from batchscribe.webhooks import payload

    repo = Lifecycle.from_settings(LifecycleSettings.from_env(aws_stack.env)).repo
    ok, bad = create()["job_id"], create()["job_id"]
    result = ResultSummary(
        language="en",
        duration_seconds=9.5,
        outputs={"txt": "outputs/k/txt", "srt": "outputs/k/srt"},
        engine="faster-whisper",
        model="tiny.en",
        compute_seconds=1.25,
        real_time_factor=0.13,
        cost_usd=None,
    )
    for job_id in (ok, bad):
        repo.enqueue(job_id, 10)
        repo.claim(job_id, "w", 60)
    running = repo.get(ok)
    done = repo.succeed(ok, 1, result, log_key=None)
    failed = repo.fail(bad, ErrorInfo(code="invalid_media", message="no audio"), attempt=1)

    for old, new in ((running, done), (running.model_copy(update={"job_id": bad}), failed)):
        detail = status_change(old, new)
        body = payload(new)
        assert detail is not None and detail.pop("previous_status") == "running"
        assert body.pop("type") == "job.finished"
        assert detail == body
    assert payload(done)["result"] == {
        "language": "en",
        "duration_seconds": 9.5,
        "compute_seconds": 1.25,
        "real_time_factor": 0.13,
        "cost_usd": None,
        "formats": ["srt", "txt"],
    }
    assert "result" not in payload(failed) and payload(failed)["error"]["code"] == "invalid_media"


def test_small_uploads_go_to_the_cpu_queue(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    sqs = boto3.client("sqs")
    small = sqs.create_queue(QueueName="small-jobs")["QueueUrl"]
    monkeypatch.setenv("BATCHSCRIBE_SMALL_JOBS_QUEUE_URL", small)
    monkeypatch.setenv("BATCHSCRIBE_SMALL_JOB_MAX_BYTES", "100")
    from tests.conftest import reset_caches

    reset_caches()
    tiny, big = create(size=50), create(size=500)
    post_upload(tiny["upload"], b"a" * 50)
    post_upload(big["upload"], b"b" * 500)
    deliver_uploads(aws_stack)

    assert [JobMessage.model_validate_json(m["Body"]).job_id for m in receive_all(small)] == [tiny["job_id"]]
    assert [JobMessage.model_validate_json(m["Body"]).job_id for m in receive_all(aws_stack.jobs_queue_url)] == [
        big["job_id"]
    ]


def test_an_enqueue_wakes_the_scaler(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    import batchscribe.scaler as scaler

    calls: list[dict[str, Any]] = []

    class FakeLambda:
        def invoke(self, **kwargs: Any) -> None:
            calls.append(kwargs)

    monkeypatch.setenv("BATCHSCRIBE_SCALER_FUNCTION_NAME", "scaler-fn")
    from tests.conftest import reset_caches

    reset_caches()
    real_client = scaler.aws.client
    fake_aws = SimpleNamespace(client=lambda name: FakeLambda() if name == "lambda" else real_client(name))
    monkeypatch.setattr(scaler, "aws", fake_aws)
    job = create(size=5)
    post_upload(job["upload"], b"12345")
    deliver_uploads(aws_stack)
    assert calls == [{"FunctionName": "scaler-fn", "InvocationType": "Event", "Payload": b"{}"}]
    deliver_uploads(aws_stack)  # nothing new queued: the scaler is not woken again
    assert len(calls) == 1


def test_reconciler_requeues_or_fails_the_jobs_a_dead_worker_held(aws_stack: Stack) -> None:
    from lambdas.reconciler.handler import handler

    svc = Lifecycle.from_settings(LifecycleSettings.from_env(aws_stack.env))
    ids = []
    for _ in range(3):
        job_id = create()["job_id"]
        svc.repo.enqueue(job_id, 1000)
        ids.append(job_id)
    svc.repo.claim(ids[0], "batch-1:0", 300)
    svc.repo.claim(ids[1], "batch-2:0", 300)  # another worker, still alive
    for _ in range(5):  # ids[2]: its worker died on every attempt
        job = svc.repo.claim(ids[2], "batch-1:0", -1)
    assert job.attempt == 5

    event = {
        "detail-type": "Batch Job State Change",
        "source": "aws.batch",
        "detail": {"jobId": "batch-1:0", "status": "FAILED", "arrayProperties": {"index": 0}},
    }
    assert handler(event, LocalContext()) == {"requeued": 1, "failed": 1}

    assert svc.repo.get(ids[0]).status is JobStatus.QUEUED
    assert svc.repo.get(ids[1]).status is JobStatus.RUNNING
    failed = svc.repo.get(ids[2])
    assert failed.status is JobStatus.FAILED and failed.error is not None
    assert failed.error.code == "retries_exhausted"
    assert [JobMessage.model_validate_json(m["Body"]).job_id for m in receive_all(aws_stack.jobs_queue_url)] == [ids[0]]
    # a repeat of the event, a running worker's event, and an array parent's event change nothing
    assert svc.worker_exited("batch-1:0") == ExitCounts(requeued=0, failed=0)
    for detail in (
        {"jobId": "batch-2:0", "status": "RUNNING"},
        {"jobId": "batch-2", "status": "FAILED", "arrayProperties": {"size": 2}},
    ):
        assert handler({"detail": detail}, LocalContext()) == {"requeued": 0, "failed": 0}
    assert svc.repo.get(ids[1]).status is JobStatus.RUNNING
