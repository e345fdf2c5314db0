"""What IAM authorizes for one AWS call: its action(s) and the ARN of each resource it touches,
from the operation and its parameters, for every operation this code base calls (grep the
`aws.client(...)` users in batchscribe/, gpu_container/ and lambdas/). An operation not listed
raises `UnknownOperation`: a new call cannot slip by unchecked."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from batchscribe.resources import TABLE_KEY
from batchscribe_cli.local.lambda_events import LOCAL_REGION
from batchscribe_cli.local.policies import MOTO_ACCOUNT, Context, sqs_arn, table_arn

Checks = list[tuple[str, str]]  # (action, resource ARN)
Params = Mapping[str, Any]


class UnknownOperation(LookupError):
    """A call the local stack's IAM check cannot name the resource of."""


def _object(p: Params, key: str = "Key") -> str:
    return f"arn:aws:s3:::{p['Bucket']}/{p[key]}"


def _bucket(p: Params) -> str:
    return f"arn:aws:s3:::{p['Bucket']}"


def _versioned(action: str) -> Callable[[Params], Checks]:
    """GetObject/HeadObject/DeleteObject of a given version need the *Version action."""
    return lambda p: [(f"s3:{action}Version" if p.get("VersionId") else f"s3:{action}", _object(p))]


def _object_action(action: str) -> Callable[[Params], Checks]:
    return lambda p: [(action, _object(p))]


def _copy(p: Params) -> Checks:
    source = p["CopySource"]
    if isinstance(source, str):
        bucket, _, key = source.lstrip("/").partition("/")
        source = {"Bucket": bucket, "Key": key.split("?", 1)[0]}
    return [("s3:PutObject", _object(p)), ("s3:GetObject", _object(source))]


S3: dict[str, Callable[[Params], Checks]] = {
    "GetObject": _versioned("GetObject"),
    "HeadObject": _versioned("GetObject"),
    "DeleteObject": _versioned("DeleteObject"),
    "PutObject": _object_action("s3:PutObject"),
    "CopyObject": _copy,
    "CreateMultipartUpload": _object_action("s3:PutObject"),
    "UploadPart": _object_action("s3:PutObject"),
    "CompleteMultipartUpload": _object_action("s3:PutObject"),
    "AbortMultipartUpload": _object_action("s3:AbortMultipartUpload"),
    "ListParts": _object_action("s3:ListMultipartUploadParts"),
    "ListObjects": lambda p: [("s3:ListBucket", _bucket(p))],
    "ListObjectsV2": lambda p: [("s3:ListBucket", _bucket(p))],
    "HeadBucket": lambda p: [("s3:ListBucket", _bucket(p))],
    "ListMultipartUploads": lambda p: [("s3:ListBucketMultipartUploads", _bucket(p))],
    "DeleteObjects": lambda p: [
        ("s3:DeleteObject", _object({"Bucket": p["Bucket"], **o})) for o in p["Delete"]["Objects"]
    ],
}


def _table(p: Params) -> str:
    return table_arn(p["TableName"])


def _table_or_index(p: Params) -> str:
    return f"{_table(p)}/index/{p['IndexName']}" if p.get("IndexName") else _table(p)


_TRANSACT = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}


def _transact_write(p: Params) -> Checks:
    """No action of its own: each item needs its own operation's action on its table."""
    return [
        (f"dynamodb:{_TRANSACT[kind]}", table_arn(body["TableName"]))
        for item in p["TransactItems"]
        for kind, body in item.items()
    ]


def _table_action(op: str) -> Callable[[Params], Checks]:
    return lambda p: [(f"dynamodb:{op}", _table(p))]


DYNAMODB: dict[str, Callable[[Params], Checks]] = {
    **{op: _table_action(op) for op in ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "DescribeTable")},
    "Query": lambda p: [("dynamodb:Query", _table_or_index(p))],
    "Scan": lambda p: [("dynamodb:Scan", _table_or_index(p))],
    "BatchGetItem": lambda p: [("dynamodb:BatchGetItem", table_arn(t)) for t in p["RequestItems"]],
    "BatchWriteItem": lambda p: [("dynamodb:BatchWriteItem", table_arn(t)) for t in p["RequestItems"]],
    "TransactWriteItems": _transact_write,
    "TransactGetItems": lambda p: [("dynamodb:GetItem", table_arn(i["Get"]["TableName"])) for i in p["TransactItems"]],
}

STREAMS: dict[str, Callable[[Params], Checks]] = {
    "DescribeStream": lambda p: [("dynamodb:DescribeStream", p["StreamArn"])],
    "GetShardIterator": lambda p: [("dynamodb:GetShardIterator", p["StreamArn"])],
    # moto's shard iterator starts with its stream's ARN ("{stream arn}|1|{id}")
    "GetRecords": lambda p: [("dynamodb:GetRecords", p["ShardIterator"].split("|", 1)[0])],
    "ListStreams": lambda p: [("dynamodb:ListStreams", "*")],
}


def _queue(action: str) -> Callable[[Params], Checks]:
    return lambda p: [(f"sqs:{action}", sqs_arn(p["QueueUrl"]))]


SQS: dict[str, Callable[[Params], Checks]] = {
    **{op: _queue(op) for op in ("SendMessage", "ReceiveMessage", "DeleteMessage", "ChangeMessageVisibility")},
    **{op: _queue(op) for op in ("GetQueueAttributes", "PurgeQueue")},
    "SendMessageBatch": _queue("SendMessage"),
    "DeleteMessageBatch": _queue("DeleteMessage"),
    "ChangeMessageVisibilityBatch": _queue("ChangeMessageVisibility"),
    "GetQueueUrl": lambda p: [("sqs:GetQueueUrl", sqs_arn(p["QueueName"]))],
}


def _arn(service: str, kind: str, name: str) -> str:
    return name if name.startswith("arn:") else f"arn:aws:{service}:{LOCAL_REGION}:{MOTO_ACCOUNT}:{kind}{name}"


def _bus(entry: Params) -> str:
    return _arn("events", "event-bus/", entry.get("EventBusName") or "default")


OTHERS: dict[str, dict[str, Callable[[Params], Checks]]] = {
    "events": {"PutEvents": lambda p: [("events:PutEvents", _bus(e)) for e in p["Entries"]]},
    "secretsmanager": {
        "GetSecretValue": lambda p: [
            ("secretsmanager:GetSecretValue", _arn("secretsmanager", "secret:", p["SecretId"]))
        ],
    },
    "lambda": {
        "Invoke": lambda p: [("lambda:InvokeFunction", _arn("lambda", "function:", p["FunctionName"]))],
    },
    "batch": {
        "SubmitJob": lambda p: [
            ("batch:SubmitJob", _arn("batch", "job-queue/", p["jobQueue"])),
            ("batch:SubmitJob", _arn("batch", "job-definition/", p["jobDefinition"])),
        ],
        "ListJobs": lambda p: [("batch:ListJobs", "*")],
        "DescribeJobs": lambda p: [("batch:DescribeJobs", "*")],
    },
}
SERVICES: dict[str, Mapping[str, Callable[[Params], Checks]]] = {
    "s3": S3,
    "dynamodb": DYNAMODB,
    "dynamodbstreams": STREAMS,
    "sqs": SQS,
    **OTHERS,
}


def checks(service: str, operation: str, params: Params) -> Checks:
    """The (action, resource) pairs IAM authorizes for one call."""
    try:
        resolve = SERVICES[service][operation]
    except KeyError:
        raise UnknownOperation(
            f"{service}.{operation}: the local stack's IAM check does not know which action and resource "
            f"this call needs; add it to {__name__}"
        ) from None
    return resolve(params)


def _leading_keys(p: Params) -> list[str] | None:
    """The partition key values a DynamoDB call names (the tables here are keyed by TABLE_KEY)."""
    items = [p.get("Key"), p.get("Item")]
    items += [body.get("Key") or body.get("Item") for t in p.get("TransactItems", []) for body in t.values()]
    values = [next(iter(item[TABLE_KEY].values())) for item in items if item and TABLE_KEY in item]
    return values or None


def context(service: str, operation: str, params: Params) -> Context:
    """The condition keys IAM evaluates for one call, as far as the stack's conditions use them:
    `dynamodb:LeadingKeys` (the partition key values the call touches). A Query's or a Scan's
    keys are not derived from its expression: they are given as one value no grant names, so a
    statement conditioned on them does not hold here (stricter than AWS, never looser)."""
    if service != "dynamodb":
        return {}
    if operation in ("Query", "Scan"):
        return {"dynamodb:LeadingKeys": [f"<{operation} keys: not derived locally>"]}
    keys = _leading_keys(params)
    return {"dynamodb:LeadingKeys": keys} if keys is not None else {}


def presigned_post(bucket: str, key: str) -> Checks:
    """A presigned POST lets its holder PutObject to one key."""
    return [("s3:PutObject", f"arn:aws:s3:::{bucket}/{key}")]
