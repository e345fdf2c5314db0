"""Test helpers that drive the service the way AWS would: API events, presigned uploads,
SQS -> Lambda deliveries."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import requests

from batchscribe_cli.local import LocalContext, one_at_a_time, sqs_event
from tests.conftest import OWNER_A, Stack, api_event


@functools.cache
def api_handler() -> Callable[[dict[str, Any], Any], Any]:
    """The API function, one event at a time as one Lambda environment runs them (Powertools
    keeps the current event on the shared resolver), as the local stack calls it."""
    from lambdas.api.handler import handler

    return one_at_a_time(handler)


def call(method: str, path: str, body: Any = None, owner: str | None = OWNER_A, **kw: Any) -> tuple[int, Any]:
    resp = api_handler()(api_event(method, path, body, owner=owner, **kw), LocalContext())
    return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None


def create(owner: str = OWNER_A, size: int = 1000, content_type: str = "audio/wav", **kw: Any) -> dict[str, Any]:
    body = {"filename": "talk.wav", "content_type": content_type, "size_bytes": size, **kw}
    status, job = call("POST", "/jobs", body, owner=owner)
    assert status == 201, job
    return job


def post_upload(ticket: dict[str, Any], data: bytes, content_type: str | None = None) -> requests.Response:
    """The browser/CLI side of a presigned POST: the form fields, then the file."""
    fields = dict(ticket["fields"])
    if content_type is not None:
        fields["Content-Type"] = content_type
    resp = requests.post(ticket["url"], data=fields, files={"file": ("input", data)}, timeout=30)
    assert resp.status_code in (200, 201, 204), resp.text
    return resp


def receive_all(queue_url: str, wait: int = 0) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    out: list[dict[str, Any]] = []
    while True:
        resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
        msgs = resp.get("Messages", [])
        if not msgs:
            return out
        out.extend(msgs)
        for m in msgs:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


def deliver_uploads(stack: Stack, times: int = 1) -> dict[str, Any]:
    """Hand every pending upload notification to on_upload, `times` times over (SQS is at
    least once; moto never duplicates, so duplicates are injected here)."""
    from lambdas.on_upload.handler import handler

    messages = receive_all(stack.uploads_queue_url)
    result: dict[str, Any] = {"batchItemFailures": []}
    if not messages:
        return result  # SQS never invokes a function with an empty batch
    for _ in range(times):
        result = handler(sqs_event(messages), LocalContext())
    return result


@dataclass(frozen=True)
class EmfPoint:
    """One value of a metric in an embedded-metric-format (EMF) line: what CloudWatch reads."""

    namespace: str
    dimensions: dict[str, str]
    value: float


def emf_points(output: str, name: str) -> list[EmfPoint]:
    """The values of metric `name` in captured stdout (Powertools prints one JSON line per
    flush), with the dimensions and namespace each line declares for it, in order."""
    points = []
    for line in output.splitlines():
        if '"_aws"' not in line:
            continue
        doc = json.loads(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            if not any(m["Name"] == name for m in directive["Metrics"]):
                continue
            [dims] = directive["Dimensions"]
            values = doc[name] if isinstance(doc[name], list) else [doc[name]]
            points += [EmfPoint(directive["Namespace"], {d: doc[d] for d in dims}, v) for v in values]
    return points
