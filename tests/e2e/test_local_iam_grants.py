"""A grant taken out of the CDK code stops the local stack, loudly: the policies regenerated from
a copy of this tree whose compute construct no longer gives the workers
`grant_consume_messages` (what `make policies` would write there), and a local stack run with
them, runs no job, and the worker's log names the call its role was denied."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchscribe.settings import Timings
from batchscribe_cli.client import Client
from batchscribe_cli.local import LocalConfig, LocalStack
from batchscribe_cli.local.policies import WORKER, read, sqs_arn
from tests.e2e.waits import wait_until, worker_logged

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "batchscribe_cli" / "samples" / "sample.mp3"
GRANT = "pair.queue.grant_consume_messages(role)"


def copy_of_this_tree(to: Path) -> Path:
    """The files git knows here (tracked, and new ones not ignored), as they are now."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)
    return to


@pytest.fixture(scope="module")
def without_consume_grant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """policies.json as the CDK code synthesizes it once the workers' consume grant is deleted."""
    tree = copy_of_this_tree(tmp_path_factory.mktemp("tree"))
    construct = tree / "stacks" / "constructs" / "compute.py"
    code = construct.read_text()
    assert code.count(GRANT) == 1
    construct.write_text("\n".join(line for line in code.splitlines() if GRANT not in line) + "\n")
    out = tree / "policies-without-grant.json"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    made = subprocess.run(
        [sys.executable, "-m", "scripts.gen_policies", "--out", str(out)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, without_consume_grant: Path) -> Iterator[LocalStack]:
    """A local stack (IAM checked, as by default) with those policies; what it says kept."""
    lines: list[str] = []
    config = LocalConfig(
        port=0,
        max_workers=1,
        data_dir=tmp_path_factory.mktemp("local"),
        policies=without_consume_grant,
        timings=Timings.local().replace(idle_exit_seconds=30),
    )
    s = LocalStack(config, say=lines.append)
    s.lines = lines  # type: ignore[attr-defined]
    with s:
        yield s


def test_the_regenerated_policies_lose_exactly_what_the_grant_gave(without_consume_grant: Path) -> None:
    def actions(document: dict[str, object], component: str) -> set[str]:
        statements = document["components"][component]["statements"]  # type: ignore[index]
        return {a for s in statements for a in s.get("Action", [])}

    before, after = read(), json.loads(without_consume_grant.read_text())
    lost = actions(before, WORKER) - actions(after, WORKER)
    assert lost == {"sqs:ReceiveMessage", "sqs:ChangeMessageVisibility", "sqs:DeleteMessage"}
    for component in before["components"]:  # nobody else's policy changed
        if not component.startswith("worker:"):
            assert before["components"][component] == after["components"][component], component


def test_with_the_grant_deleted_from_the_cdk_code_no_job_runs_and_the_log_names_the_denied_call(
    stack: LocalStack,
) -> None:
    assert stack.resources is not None
    c = Client(stack.url, owner="lee")
    job = c.submit(SAMPLE, {"language": "en"})
    queue = sqs_arn(stack.resources.jobs_queue_url)
    # the worker started for it cannot receive its message (from any class queue of the pool:
    # their names begin with the main one's): the denial is in the worker's log
    denied = f"IAM: denied worker:gpu: sqs:ReceiveMessage on {queue}"
    wait_until(lambda: worker_logged(stack, denied), timeout=120)
    assert worker_logged(stack, "is not authorized to perform: sqs:ReceiveMessage")  # the ClientError, as logged
    # ... and on the stack's terminal
    wait_until(lambda: any(denied in line for line in stack.lines), timeout=10)  # type: ignore[attr-defined]
    status = c.get(job["job_id"])
    assert status["status"] == "queued" and status.get("attempt", 0) == 0, status  # nothing ran it
