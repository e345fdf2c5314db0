"""Upload intake: S3 ObjectCreated -> uploads queue -> on_upload -> job queued (or refused)."""

from __future__ import annotations

import json

import boto3
import pytest

from batchscribe.models import JobMessage
from batchscribe.repository import JobRepository
from batchscribe_cli.local import LocalContext
from tests.conftest import Stack
from tests.helpers import call, create, deliver_uploads, post_upload, receive_all, sqs_event


def status_of(job_id: str) -> dict:
    code, job = call("GET", f"/jobs/{job_id}")
    assert code == 200
    return job


def object_exists(stack: Stack, key: str) -> bool:
    resp = boto3.client("s3").list_objects_v2(Bucket=stack.bucket, Prefix=key)
    return resp.get("KeyCount", 0) > 0


def job_messages(stack: Stack) -> list[JobMessage]:
    return [JobMessage.model_validate_json(m["Body"]) for m in receive_all(stack.jobs_queue_url)]


def test_upload_moves_job_to_queued_and_enqueues_it(aws_stack: Stack) -> None:
    job = create(size=2048)
    post_upload(job["upload"], b"\x01" * 2048)

    result = deliver_uploads(aws_stack)

    assert result["batchItemFailures"] == []
    got = status_of(job["job_id"])
    assert got["status"] == "queued"
    assert got["queued_at"]
    assert got["input"]["size_bytes"] == 2048
    assert [m.job_id for m in job_messages(aws_stack)] == [job["job_id"]]


def test_duplicate_notifications_change_nothing(aws_stack: Stack) -> None:
    job = create(size=10)
    post_upload(job["upload"], b"x" * 10)

    deliver_uploads(aws_stack, times=3)

    assert status_of(job["job_id"])["status"] == "queued"
    assert [m.job_id for m in job_messages(aws_stack)] == [job["job_id"]]
    assert object_exists(aws_stack, job["upload"]["fields"]["key"])


def test_test_event_is_skipped(aws_stack: Stack) -> None:
    from lambdas.on_upload.handler import handler

    body = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": aws_stack.bucket})
    assert handler(sqs_event([{"Body": body}]), LocalContext()) == {"batchItemFailures": []}
    assert job_messages(aws_stack) == []


def test_url_encoded_keys_are_decoded(aws_stack: Stack) -> None:
    from lambdas.on_upload.handler import handler

    job = create(size=5)
    key = job["upload"]["fields"]["key"]
    boto3.client("s3").put_object(Bucket=aws_stack.bucket, Key=key, Body=b"12345", ContentType="audio/wav")
    receive_all(aws_stack.uploads_queue_url)  # drop moto's own notification; deliver an encoded one
    encoded = key.replace("/", "%2F")
    body = json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": encoded, "size": 5}}}]})

    assert handler(sqs_event([{"Body": body}]), LocalContext()) == {"batchItemFailures": []}
    assert status_of(job["job_id"])["status"] == "queued"


def test_upload_larger_than_declared_fails_the_job_and_deletes_it(aws_stack: Stack) -> None:
    # moto does not enforce the POST policy's content-length-range; on_upload is the real guard.
    job = create(size=100)
    post_upload(job["upload"], b"y" * 5000)

    deliver_uploads(aws_stack)

    got = status_of(job["job_id"])
    assert got["status"] == "failed"
    assert got["error"]["code"] == "upload_too_large"
    assert not object_exists(aws_stack, job["upload"]["fields"]["key"])
    assert job_messages(aws_stack) == []


def test_empty_upload_fails_the_job(aws_stack: Stack) -> None:
    job = create(size=100)
    post_upload(job["upload"], b"")
    deliver_uploads(aws_stack)
    got = status_of(job["job_id"])
    assert (got["status"], got["error"]["code"]) == ("failed", "upload_empty")


def test_content_type_other_than_declared_fails_the_job(aws_stack: Stack) -> None:
    job = create(size=10, content_type="audio/wav")
    post_upload(job["upload"], b"z" * 10, content_type="text/html")
    deliver_uploads(aws_stack)
    got = status_of(job["job_id"])
    assert (got["status"], got["error"]["code"]) == ("failed", "upload_content_type_mismatch")
    assert not object_exists(aws_stack, job["upload"]["fields"]["key"])


@pytest.mark.parametrize("key", ["uploads/evil.sh", "uploads/" + "a" * 32 + "/" + "b" * 32 + "/input"])
def test_objects_the_service_did_not_ask_for_are_deleted(aws_stack: Stack, key: str) -> None:
    boto3.client("s3").put_object(Bucket=aws_stack.bucket, Key=key, Body=b"junk")
    assert deliver_uploads(aws_stack) == {"batchItemFailures": []}
    assert not object_exists(aws_stack, key)
    assert job_messages(aws_stack) == []


def test_upload_to_another_owners_prefix_is_refused(aws_stack: Stack) -> None:
    job = create(size=5)
    wrong = job["upload"]["fields"]["key"].replace("uploads/", "uploads/" + "f" * 32 + "/").split("/")
    key = "/".join([wrong[0], wrong[1], wrong[3], wrong[4]])
    boto3.client("s3").put_object(Bucket=aws_stack.bucket, Key=key, Body=b"12345")
    deliver_uploads(aws_stack)
    assert status_of(job["job_id"])["status"] == "pending"
    assert not object_exists(aws_stack, key)


def test_upload_after_cancel_is_discarded(aws_stack: Stack) -> None:
    job = create(size=5)
    call("POST", f"/jobs/{job['job_id']}/cancel")
    post_upload(job["upload"], b"12345")
    deliver_uploads(aws_stack)
    assert status_of(job["job_id"])["status"] == "cancelled"
    assert not object_exists(aws_stack, job["upload"]["fields"]["key"])
    assert job_messages(aws_stack) == []


def test_poison_record_fails_alone_in_its_batch(aws_stack: Stack) -> None:
    from lambdas.on_upload.handler import handler

    job = create(size=5)
    post_upload(job["upload"], b"12345")
    good = receive_all(aws_stack.uploads_queue_url)
    poison = {"MessageId": "poison-1", "Body": "{this is not json"}

    result = handler(sqs_event([poison, *good]), LocalContext())

    assert result == {"batchItemFailures": [{"itemIdentifier": "poison-1"}]}
    assert status_of(job["job_id"])["status"] == "queued"


def test_notification_for_an_object_already_gone_changes_nothing(aws_stack: Stack) -> None:
    job = create(size=5)
    post_upload(job["upload"], b"12345")
    boto3.client("s3").delete_object(Bucket=aws_stack.bucket, Key=job["upload"]["fields"]["key"])
    deliver_uploads(aws_stack)
    assert status_of(job["job_id"])["status"] == "pending"
    assert JobRepository(aws_stack.table).get(job["job_id"]).queued_at is None
