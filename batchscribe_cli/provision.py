"""Make the service's data plane (the table and its stream, bucket, queues, S3 -> SQS
notification) in an AWS API, the way the CDK stack makes it, from the same declarations
(batchscribe.resources and the timings). Used against moto: by the local stack and the tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchscribe import resources as r
from batchscribe.keys import UPLOADS_PREFIX
from batchscribe.models import DEFAULT_PRIORITY, PRIORITIES, Priority
from batchscribe.settings import Timings, WebhookSettings


@dataclass(frozen=True)
class Provisioned:
    table: str
    bucket: str
    jobs_queue_url: str
    jobs_dlq_url: str
    uploads_queue_url: str
    uploads_dlq_url: str
    webhooks_queue_url: str
    # the `high` and `low` classes' queues and DLQs (`normal`'s are jobs_queue_url, jobs_dlq_url)
    class_queue_urls: dict[Priority, str]
    class_dlq_urls: dict[Priority, str]

    @property
    def all_jobs_dlq_urls(self) -> list[str]:
        return [self.jobs_dlq_url, *self.class_dlq_urls.values()]


def create_table(
    dynamodb: Any, name: str, attributes: Mapping[str, tuple[str, ...] | None] = r.INDEX_ATTRIBUTES
) -> None:
    """The jobs table with its indexes, each carrying the attributes `attributes` names for it
    (left out: every attribute, which is what a CDK table made before the declaration had)."""
    attrs = {r.TABLE_KEY: "S"}
    indexes = []
    for index, (pk, pk_type, sk, sk_type) in r.TABLE_INDEXES.items():
        attrs[pk], attrs[sk] = pk_type, sk_type
        indexes.append(
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": pk, "KeyType": "HASH"},
                    {"AttributeName": sk, "KeyType": "RANGE"},
                ],
                "Projection": _projection(attributes.get(index)),
            }
        )
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": r.TABLE_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": t} for k, t in attrs.items()],
        GlobalSecondaryIndexes=indexes,
        # every change with both images: the notify function reads it (stacks/constructs/jobs.py)
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": r.TTL_ATTRIBUTE}
    )


def _projection(attributes: tuple[str, ...] | None) -> dict[str, Any]:
    """An index's projection as declared (batchscribe.resources.INDEX_ATTRIBUTES)."""
    if attributes is None:
        return {"ProjectionType": "ALL"}
    return {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(attributes)}


def create_queue_pair(
    sqs: Any, name: str, dlq_name: str, visibility: int, max_receive: int, dlq_visibility: int
) -> tuple[str, str]:
    dlq_url = sqs.create_queue(
        QueueName=dlq_name,
        Attributes={"MessageRetentionPeriod": str(r.DLQ_RETENTION_SECONDS), "VisibilityTimeout": str(dlq_visibility)},
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility),
            "MessageRetentionPeriod": str(r.RETENTION_SECONDS),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)}),
        },
    )["QueueUrl"]
    return url, dlq_url


def bucket_cors_rule() -> dict[str, Any]:
    """The bucket's CORS rule as the stack sets it (stacks/constructs/jobs.py): the web console
    uploads from its own origin and reads each part's ETag."""
    return {
        "AllowedOrigins": ["*"],
        "AllowedMethods": list(r.BUCKET_CORS_METHODS),
        "AllowedHeaders": list(r.BUCKET_CORS_ALLOW_HEADERS),
        "ExposeHeaders": list(r.BUCKET_CORS_EXPOSE_HEADERS),
        "MaxAgeSeconds": r.BUCKET_CORS_MAX_AGE_SECONDS,
    }


def provision(session: Any, names: r.Names, timings: Timings | None = None, region: str = "us-east-1") -> Provisioned:
    """Create the table, the bucket, the queue pairs (uploads, and jobs per priority class)
    and the upload notification."""
    t = timings or Timings()
    ddb, s3, sqs = session.client("dynamodb"), session.client("s3"), session.client("sqs")
    create_table(ddb, names.table)
    if region == "us-east-1":
        s3.create_bucket(Bucket=names.bucket)
    else:
        s3.create_bucket(Bucket=names.bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_cors(Bucket=names.bucket, CORSConfiguration={"CORSRules": [bucket_cors_rule()]})
    jobs_url, jobs_dlq = create_queue_pair(
        sqs, names.jobs_queue, names.jobs_dlq, t.visibility_seconds, r.JOBS_MAX_RECEIVE_COUNT, t.dlq_visibility_seconds
    )
    classes = {
        p: create_queue_pair(
            sqs,
            names.class_queue(p),
            names.class_dlq(p),
            t.visibility_seconds,
            r.JOBS_MAX_RECEIVE_COUNT,
            t.dlq_visibility_seconds,
        )
        for p in PRIORITIES
        if p != DEFAULT_PRIORITY
    }
    uploads_url, uploads_dlq = create_queue_pair(
        sqs,
        names.uploads_queue,
        names.uploads_dlq,
        t.uploads_visibility_seconds,
        r.UPLOADS_MAX_RECEIVE_COUNT,
        t.dlq_visibility_seconds,
    )
    uploads_arn = sqs.get_queue_attributes(QueueUrl=uploads_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=names.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": uploads_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": UPLOADS_PREFIX}]}},
                }
            ]
        },
    )
    # finished jobs' callbacks: tried WebhookSettings.max_attempts times, then the DLQ keeps the rest
    attempts = WebhookSettings.model_fields["callback_max_attempts"].default
    webhooks_url, _ = create_queue_pair(
        sqs, names.webhooks_queue, names.webhooks_dlq, 60, attempts + 2, t.dlq_visibility_seconds
    )
    return Provisioned(
        names.table,
        names.bucket,
        jobs_url,
        jobs_dlq,
        uploads_url,
        uploads_dlq,
        webhooks_url,
        class_queue_urls={p: q for p, (q, _) in classes.items()},
        class_dlq_urls={p: d for p, (_, d) in classes.items()},
    )
