"""The whole pipeline under the deployed IAM policies: a local stack with IAM checked (the
default) runs a job from upload to callback, and a job over its owner's running cap, with every
component's calls allowed by its own role's policy and none denied; and a grant taken out of
the API's policy stops the API at its first call, named."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from batchscribe.settings import Timings
from batchscribe_cli.client import ApiError, Client
from batchscribe_cli.local import LocalConfig, LocalStack
from batchscribe_cli.local.policies import WORKER, sqs_arn, table_arn
from tests.e2e.waits import hold_workers_back, wait_until

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[2] / "batchscribe_cli" / "samples" / "sample.mp3"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """IAM checked (the default); one job at a time per owner; what the stack says kept."""
    lines: list[str] = []
    config = LocalConfig(
        port=0,
        max_workers=1,
        data_dir=tmp_path_factory.mktemp("iam"),
        timings=Timings.local().replace(idle_exit_seconds=3),
        max_running_per_owner=1,
        owner_cap_delay_seconds=1,
    )
    s = LocalStack(config, say=lines.append)
    s.lines = lines  # type: ignore[attr-defined]
    with s:
        yield s


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    got: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/done", got
    finally:
        server.shutdown()
        server.server_close()


def allowed_by(stack: LocalStack) -> dict[str, set[str]]:
    """component -> the actions it was allowed (in this process and in the workers that ended)."""
    out: dict[str, set[str]] = {}
    for component, action, _resource, _n in stack.iam_checks()["checked"]:
        out.setdefault(component, set()).add(action)
    return out


def test_a_job_from_upload_to_callback_runs_with_every_call_allowed_by_its_roles_policy(
    stack: LocalStack, receiver: tuple[str, list[bytes]]
) -> None:
    url, got = receiver
    c = Client(stack.url, owner="ivy")
    done = c.wait(c.submit(SAMPLE, {"language": "en"}, callback_url=url)["job_id"], timeout=180)
    assert done["status"] == "succeeded", done
    wait_until(lambda: len(got) == 1, timeout=30)  # the callback went out (the webhook function)
    # the worker exited: it wrote what it checked
    wait_until(lambda: stack.compute is not None and not stack.compute.pids(), timeout=60)
    allowed = allowed_by(stack)
    assert {"dynamodb:PutItem", "s3:PutObject", "s3:GetObject"} <= allowed["api"]  # create, presigned POST, results
    assert {"sqs:ReceiveMessage", "s3:GetObject", "dynamodb:UpdateItem", "sqs:SendMessage"} <= allowed["on_upload"]
    assert {"sqs:ReceiveMessage", "dynamodb:UpdateItem", "s3:GetObject", "s3:PutObject"} <= allowed[WORKER]
    assert {"dynamodb:GetRecords", "events:PutEvents", "sqs:SendMessage"} <= allowed["notify"]
    assert {"sqs:ReceiveMessage", "dynamodb:UpdateItem"} <= allowed["webhook"]
    assert "sqs:GetQueueAttributes" in allowed["scaler"]
    assert stack.iam_checks()["denied"] == []


def test_a_job_over_its_owners_running_cap_is_put_back_by_the_worker_and_still_runs(stack: LocalStack) -> None:
    """The owner may run one job at a time: the worker holding the first puts the second's
    message back for later (sqs:SendMessage with the worker's role), then runs it."""
    hold_workers_back(stack)  # both jobs queued before a worker receives them together
    c = Client(stack.url, owner="jay")
    first, second = (c.create_job(SAMPLE, {"language": "en"}) for _ in range(2))
    for job in (first, second):
        c.upload_file(job, SAMPLE)
    wait_until(lambda: all(c.get(job["job_id"])["status"] == "queued" for job in (first, second)), timeout=60)
    stack.set_max_workers(1)
    done = [c.wait(job["job_id"], timeout=240) for job in (first, second)]
    assert [d["status"] for d in done] == ["succeeded", "succeeded"], done
    wait_until(lambda: stack.compute is not None and not stack.compute.pids(), timeout=60)
    assert stack.resources is not None
    assert stack.iam_checks()["denied"] == []
    sent = [r for comp, a, r, _ in stack.iam_checks()["checked"] if (comp, a) == (WORKER, "sqs:SendMessage")]
    assert sqs_arn(stack.resources.jobs_queue_url) in sent  # the job over the cap was put back


def test_without_its_table_grant_the_api_fails_at_its_first_call_and_says_which(stack: LocalStack) -> None:
    """The statement `jobs.grant_api` adds for the table, taken out of the API's policy: a
    create fails (502, the API's answer to an AWS error), and the denial names the role, the
    action and the table."""
    assert stack.iam is not None and stack.resources is not None
    before = len(stack.iam.denied)
    api = stack.iam.policies["api"]
    kept = tuple(s for s in api.statements if not any(a.startswith("dynamodb:") for a in s.actions))
    assert len(kept) == len(api.statements) - 1  # exactly the table grant's one statement
    stack.iam.policies["api"] = replace(api, statements=kept)
    try:
        with pytest.raises(ApiError) as failed:
            Client(stack.url, owner="kim").create_job(SAMPLE, {"language": "en"})
    finally:
        stack.iam.policies["api"] = api
    assert (failed.value.status, failed.value.code) == (502, "internal_error")
    denied = list(stack.iam.denied)[before:]
    assert denied == [("api", "dynamodb:PutItem", table_arn(stack.resources.table))]
    assert any("IAM: denied api: dynamodb:PutItem on arn:aws:dynamodb:" in line for line in stack.lines)  # type: ignore[attr-defined]
