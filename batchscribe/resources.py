"""The shape of the service's AWS resources, in one place.

The CDK constructs (stacks/) and the local stack and tests (which create the same resources
in moto) both read these definitions, so the two can never drift apart: one table schema,
one set of queue attributes, one S3 -> SQS notification filter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from batchscribe.keys import UPLOADS_PREFIX
from batchscribe.repository import OWNER_INDEX, SWEEP_INDEX

TABLE_KEY = "job_id"
TTL_ATTRIBUTE = "ttl"
# index name -> (partition key, type, sort key, type)
TABLE_INDEXES: dict[str, tuple[str, str, str, str]] = {
    OWNER_INDEX: ("owner", "S", "created_at", "S"),
    SWEEP_INDEX: ("sweep_status", "S", "sweep_at", "N"),
}

# Queues. Visibility is sized for the worker heartbeat: the worker extends a message's
# visibility every HEARTBEAT_SECONDS, so a message becomes visible again within
# JOBS_VISIBILITY_SECONDS of its worker dying.
HEARTBEAT_SECONDS = 30
JOBS_VISIBILITY_SECONDS = 120
JOBS_MAX_RECEIVE_COUNT = 5
UPLOADS_VISIBILITY_SECONDS = 60
UPLOADS_MAX_RECEIVE_COUNT = 5
RETENTION_SECONDS = 4 * 24 * 3600
DLQ_RETENTION_SECONDS = 14 * 24 * 3600


@dataclass(frozen=True)
class Names:
    """Physical names for a deployment prefix (the local stack and tests use these; the CDK
    stack lets CloudFormation name things and passes the names through the environment)."""

    prefix: str = "batchscribe"

    @property
    def table(self) -> str:
        return f"{self.prefix}-jobs"

    @property
    def bucket(self) -> str:
        return f"{self.prefix}-media"

    @property
    def jobs_queue(self) -> str:
        return f"{self.prefix}-jobs"

    @property
    def jobs_dlq(self) -> str:
        return f"{self.prefix}-jobs-dlq"

    @property
    def uploads_queue(self) -> str:
        return f"{self.prefix}-uploads"

    @property
    def uploads_dlq(self) -> str:
        return f"{self.prefix}-uploads-dlq"


def create_table(dynamodb: Any, name: str) -> None:
    attrs = {TABLE_KEY: "S"}
    indexes = []
    for index, (pk, pk_type, sk, sk_type) in TABLE_INDEXES.items():
        attrs[pk], attrs[sk] = pk_type, sk_type
        indexes.append(
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": pk, "KeyType": "HASH"},
                    {"AttributeName": sk, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        )
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": TABLE_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": t} for k, t in attrs.items()],
        GlobalSecondaryIndexes=indexes,
    )
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )


def create_queue_pair(sqs: Any, name: str, dlq_name: str, visibility: int, max_receive: int) -> tuple[str, str]:
    dlq_url = sqs.create_queue(QueueName=dlq_name, Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)})[
        "QueueUrl"
    ]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility),
            "MessageRetentionPeriod": str(RETENTION_SECONDS),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)}),
        },
    )["QueueUrl"]
    return url, dlq_url


@dataclass(frozen=True)
class Provisioned:
    table: str
    bucket: str
    jobs_queue_url: str
    jobs_dlq_url: str
    uploads_queue_url: str
    uploads_dlq_url: str


def provision(session: Any, names: Names, region: str = "us-east-1") -> Provisioned:
    """Create the service's data plane (table, bucket, queues, S3 -> SQS notification) the
    way the CDK stack does. Used against moto: tests and the local stack."""
    ddb, s3, sqs = session.client("dynamodb"), session.client("s3"), session.client("sqs")
    create_table(ddb, names.table)
    if region == "us-east-1":
        s3.create_bucket(Bucket=names.bucket)
    else:
        s3.create_bucket(Bucket=names.bucket, CreateBucketConfiguration={"LocationConstraint": region})
    jobs_url, jobs_dlq = create_queue_pair(
        sqs, names.jobs_queue, names.jobs_dlq, JOBS_VISIBILITY_SECONDS, JOBS_MAX_RECEIVE_COUNT
    )
    uploads_url, uploads_dlq = create_queue_pair(
        sqs, names.uploads_queue, names.uploads_dlq, UPLOADS_VISIBILITY_SECONDS, UPLOADS_MAX_RECEIVE_COUNT
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
    return Provisioned(names.table, names.bucket, jobs_url, jobs_dlq, uploads_url, uploads_dlq)
