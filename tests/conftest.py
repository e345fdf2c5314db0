"""Shared fixtures: fake AWS credentials, moto with the service's resources, API events."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import boto3
import pytest

from batchscribe.settings import SERVICE_NAME
from batchscribe_cli.local import LocalContext, json_request
from batchscribe_cli.provision import Provisioned

# Before anything can create a boto3 client: no real account is ever reachable from tests.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "Batchscribe",
        "POWERTOOLS_DEV": "false",
        # the tests empty a module's queues between tests (AWS allows one purge a minute)
        "MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR": "false",
    }
)
for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(var, None)


@pytest.fixture(autouse=True)
def _service_logs_at_info() -> Iterator[None]:
    """Each test runs with the service's loggers at INFO (their levels put back after it).
    Powertools sets a logger's level once, when a handler is first imported, from the
    environment of that moment; the in-process local stack imports them at WARNING (quiet), which
    hid the INFO lines a later test in the same process reads from caplog."""
    manager = logging.root.manager
    loggers = [logging.getLogger(SERVICE_NAME)] + [
        v for k, v in manager.loggerDict.items() if k.startswith(SERVICE_NAME + ".") and isinstance(v, logging.Logger)
    ]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.INFO)
    yield
    for lg, level in saved:
        lg.setLevel(level)


@dataclass(frozen=True)
class Stack(Provisioned):
    """What `provision` made, plus the environment the handlers read."""

    env: dict[str, str]


def reset_caches() -> None:
    """Forget boto3 clients and what handlers built from their settings (env changed)."""
    from batchscribe import aws

    aws.reset()


@pytest.fixture(scope="module")
def _moto_resources() -> Iterator[Provisioned]:
    """moto (decorator mode) with the table, bucket, queues and notification the stack makes,
    made once per test module (provisioning is most of a short test's time); each test starts
    from them emptied (`aws_stack`)."""
    from moto import mock_aws

    from batchscribe.resources import Names
    from batchscribe_cli import moto_atomic
    from batchscribe_cli.provision import provision

    moto_atomic.apply()
    with mock_aws():
        names = Names(prefix="t" + uuid.uuid4().hex[:8])
        yield provision(boto3.Session(region_name="us-east-1"), names)


def empty(p: Provisioned) -> None:
    """Every item, object, part upload and message gone; the resources themselves kept."""
    ddb, s3, sqs = (boto3.client(name, region_name="us-east-1") for name in ("dynamodb", "s3", "sqs"))
    for page in ddb.get_paginator("scan").paginate(TableName=p.table, ProjectionExpression="job_id"):
        for item in page["Items"]:
            ddb.delete_item(TableName=p.table, Key={"job_id": item["job_id"]})
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=p.bucket):
        for version in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            s3.delete_object(Bucket=p.bucket, Key=version["Key"], VersionId=version["VersionId"])
    for upload in s3.list_multipart_uploads(Bucket=p.bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=p.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for url in sqs.list_queues().get("QueueUrls", []):  # a test's own queues too
        sqs.purge_queue(QueueUrl=url)


@pytest.fixture
def aws_stack(_moto_resources: Provisioned, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """The stack's resources on moto, empty, and the environment the handlers read."""
    from batchscribe.settings import ApiSettings, IntakeSettings, LifecycleSettings, RoutingSettings
    from batchscribe_cli.local import merged_env

    p = _moto_resources
    empty(p)
    store = {"table_name": p.table, "bucket_name": p.bucket}
    limit = 50 * 1024 * 1024
    env = merged_env(
        ApiSettings(
            **store,
            max_upload_bytes=limit,
            routing=RoutingSettings(jobs_queue_url=p.jobs_queue_url, class_queue_urls=p.class_queue_urls),
        ).to_env(),
        IntakeSettings(
            **store, jobs_queue_url=p.jobs_queue_url, class_queue_urls=p.class_queue_urls, max_upload_bytes=limit
        ).to_env(),
        LifecycleSettings(**store, jobs_queue_url=p.jobs_queue_url, class_queue_urls=p.class_queue_urls).to_env(),
    )
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reset_caches()
    yield Stack(**asdict(p), env=env)
    reset_caches()


OWNER_A = "arn:aws:iam::111111111111:user/alice"
OWNER_B = "arn:aws:iam::111111111111:user/bob"


def api_event(
    method: str,
    path: str,
    body: Any = None,
    owner: str | None = OWNER_A,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway REST proxy event from `owner` (None: an unsigned request)."""
    return json_request(method, path, body, user_arn=owner, query=query, headers=headers)


@pytest.fixture
def lambda_context() -> LocalContext:
    return LocalContext()


def _cuda_devices() -> int:
    try:
        import ctranslate2

        return int(ctranslate2.get_cuda_device_count())
    except Exception:
        return 0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--worker-image",
        default=None,
        help="run the `image` tests against this built worker image (make image-smoke passes it)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests are deselected (not skipped) where no CUDA device is present, and image tests
    where no image is named (`make image-smoke` builds one and names it)."""
    away = set()
    if not _cuda_devices():
        away.add("gpu")
    if not config.getoption("--worker-image"):
        away.add("image")
    gone = [item for item in items if any(item.get_closest_marker(m) for m in away)]
    if gone:
        config.hook.pytest_deselected(items=gone)
        items[:] = [item for item in items if item not in gone]
