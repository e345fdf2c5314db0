"""What Lambda hands a handler, built as Lambda and its event sources build it: the context,
API Gateway's REST proxy event, the SQS batch event, the DynamoDB stream event, the scheduled
event and Batch's job state change. The local stack calls the real handlers with these; the
tests and the benchmarks build theirs with them too."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

LOCAL_ACCOUNT = "000000000000"
LOCAL_REGION = "us-east-1"


def owner_arn(owner: str) -> str:
    return f"arn:aws:iam::{LOCAL_ACCOUNT}:user/{owner}"


class LocalContext:
    """The Lambda context the in-process handlers get (the tests and benchmarks use it too)."""

    function_name = "local"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:local"
    aws_request_id = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def proxy_event(
    method: str,
    path: str,
    *,
    user_arn: str | None,
    caller: str | None = None,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, list[str]] | None = None,
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """An API Gateway REST proxy event as the IAM-authorized API delivers it: the caller's
    identity in `requestContext.identity` (no `userArn` when the request was not signed), each
    header and query parameter in both forms (the single form holds the last value)."""
    headers = headers or {}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} if query else None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": LOCAL_ACCOUNT,
            "apiId": "local",
            "stage": "local",
            "requestId": uuid.uuid4().hex,
            "httpMethod": method,
            "path": path,
            "resourcePath": path,
            "identity": {"userArn": user_arn, "caller": caller or user_arn, "sourceIp": source_ip},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def json_request(
    method: str,
    path: str,
    body: Any = None,
    *,
    user_arn: str | None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A JSON request to the API as its proxy event (the tests and the API benchmark call the
    handler with these): a body that is not a string is serialised, each query parameter given once."""
    return proxy_event(
        method,
        path,
        user_arn=user_arn,
        body=body if isinstance(body, str) or body is None else json.dumps(body),
        headers={"Content-Type": "application/json", **(headers or {})},
        query={k: [v] for k, v in query.items()} if query else None,
    )


def sqs_event(
    messages: list[dict[str, Any]], queue_arn: str = f"arn:aws:sqs:{LOCAL_REGION}:{LOCAL_ACCOUNT}:queue"
) -> dict[str, Any]:
    """The event Lambda's SQS event source delivers for ReceiveMessage results (tests pass
    bodies alone; the id and handle are then made up)."""
    return {
        "Records": [
            {
                "messageId": m.get("MessageId") or str(uuid.uuid4()),
                "receiptHandle": m.get("ReceiptHandle", "rh"),
                "body": m["Body"],
                "attributes": {k: str(v) for k, v in m.get("Attributes", {"ApproximateReceiveCount": 1}).items()},
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": LOCAL_REGION,
            }
            for m in messages
        ]
    }


def stream_event(records: list[dict[str, Any]], stream_arn: str) -> dict[str, Any]:
    """The event Lambda's DynamoDB event source delivers for GetRecords results: each record as
    read (eventName; Keys, NewImage, OldImage, SequenceNumber under `dynamodb`), its creation
    time in epoch seconds (the API's client gives a datetime), and the stream's ARN."""
    out = []
    for record in records:
        change = dict(record["dynamodb"])
        created = change.get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            change["ApproximateCreationDateTime"] = int(created.timestamp())
        out.append({**record, "dynamodb": change, "eventSourceARN": stream_arn})
    return {"Records": out}


def scheduled_event(rule: str) -> dict[str, Any]:
    """What an EventBridge schedule delivers to its target."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT,
        "region": LOCAL_REGION,
        "resources": [f"arn:aws:events:{LOCAL_REGION}:{LOCAL_ACCOUNT}:rule/{rule}"],
        "detail": {},
    }


def batch_state_change(job_id: str, status: str) -> dict[str, Any]:
    """Batch's "Batch Job State Change" event for one (non-array) job."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Batch Job State Change",
        "source": "aws.batch",
        "account": LOCAL_ACCOUNT,
        "region": LOCAL_REGION,
        "resources": [f"arn:aws:batch:{LOCAL_REGION}:{LOCAL_ACCOUNT}:job/{job_id}"],
        "detail": {"jobId": job_id, "jobName": job_id, "status": status},
    }
