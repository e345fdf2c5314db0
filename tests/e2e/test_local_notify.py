"""The notify function runs in the local stack through its real handler, as it runs deployed:
the jobs table's stream -> notify -> a "Job Status Change" event on the default EventBridge bus
(moto's), which a user's rule delivers to their queue. Nothing else in the stack announces a
finished job, so an event that arrives was published by the handler."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from batchscribe.resources import DETAIL_TYPE, EVENT_SOURCE
from batchscribe_cli.client import Client
from batchscribe_cli.local import LocalStack, owner_arn
from tests.e2e.waits import running_stack, wait_until

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[2] / "batchscribe_cli" / "samples" / "sample.mp3"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from running_stack(tmp_path_factory)


def subscribe(name: str) -> str:
    """A rule on the default bus for the status-change events, with a new queue as its target."""
    sqs, events = boto3.client("sqs"), boto3.client("events")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = {"source": [EVENT_SOURCE], "detail-type": [DETAIL_TYPE]}
    events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED")
    events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": arn}])
    return url


def collect(url: str, into: list[dict[str, Any]]) -> None:
    for m in boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        into.append(json.loads(m["Body"]))


def test_finished_jobs_are_announced_on_the_default_bus(stack: LocalStack, tmp_path: Path) -> None:
    # Given a rule on the default bus that sends the status-change events to a queue
    url = subscribe("job-status")
    c = Client(stack.url, owner="erin")
    noise = tmp_path / "noise.wav"
    noise.write_bytes(os.urandom(4096))

    # When a good file and an undecodable one run through the stack
    good = c.wait(c.submit(SAMPLE, {"language": "en"})["job_id"], timeout=180)
    bad = c.wait(c.submit(noise)["job_id"], timeout=180)
    assert (good["status"], bad["status"]) == ("succeeded", "failed"), (good, bad)

    # Then each job's one terminal change arrives as an event, with what a subscriber needs
    got: list[dict[str, Any]] = []
    wanted = {good["job_id"], bad["job_id"]}

    def arrived() -> bool:
        collect(url, got)
        return wanted <= {e["detail"]["job_id"] for e in got}

    wait_until(arrived, timeout=30)
    mine = {e["detail"]["job_id"]: e for e in got if e["detail"]["job_id"] in wanted}
    assert len(mine) == len([e for e in got if e["detail"]["job_id"] in wanted]) == 2  # one event each
    for event in mine.values():
        assert (event["source"], event["detail-type"]) == (EVENT_SOURCE, DETAIL_TYPE)
    succeeded, failed = mine[good["job_id"]]["detail"], mine[bad["job_id"]]["detail"]
    assert succeeded["status"] == "succeeded" and succeeded["previous_status"] == "running"
    assert succeeded["owner"] == owner_arn("erin") and succeeded["filename"] == SAMPLE.name
    assert succeeded["finished_at"] == good["finished_at"]
    assert succeeded["result"]["language"] == "en"
    assert succeeded["result"]["duration_seconds"] == good["result"]["duration_seconds"]
    assert set(succeeded["result"]["formats"]) >= {"txt", "srt", "vtt", "json"}
    assert succeeded["result"]["compute_seconds"] > 0 and succeeded["priority"] == "normal"
    assert failed["status"] == "failed" and failed["error"]["code"] == bad["error"]["code"] == "invalid_media"
    # the stack's own lines read the same stream records
    assert (good["job_id"], "running", "succeeded") in stack.transitions
