"""The local stack over real HTTP, across a restart: what a user made before `stop` is there
after `start` with the same data folder (finished jobs and their transcripts, queued work,
open uploads); and result links with any filename answer at once (RFC 6266 headers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from batchscribe.settings import Timings
from batchscribe_cli.client import Client
from batchscribe_cli.local import LocalConfig, LocalStack
from tests.e2e.waits import hold_workers_back, wait_until

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[2] / "batchscribe_cli" / "samples" / "sample.mp3"


def config(data_dir: Path) -> LocalConfig:
    return LocalConfig(
        port=0, max_workers=1, data_dir=data_dir, timings=Timings.local().replace(idle_exit_seconds=3), quiet=True
    )


def test_jobs_and_results_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    odd = tmp_path / '会议 "notes"; x=1.mp3'  # non-ASCII, a quote, a parameter
    shutil.copy(SAMPLE, odd)

    # Given a stack with a finished job, a queued one and one waiting for its upload
    with LocalStack(config(data)) as first:
        c = Client(first.url, owner="alice")
        done = c.wait(c.submit(odd, {"language": "en", "formats": ["txt", "srt"]})["job_id"], timeout=180)
        assert done["status"] == "succeeded", done
        text = c.result_text(done, "txt")
        assert "thank you" in text.lower()

        # the result link answers at once over real HTTP, with a header any client can parse
        resp = requests.get(done["result"]["urls"]["srt"], timeout=10)
        assert resp.status_code == 200 and resp.content.startswith(b"1\n")
        disposition = resp.headers["Content-Disposition"]
        assert disposition.isascii()
        assert disposition.startswith('attachment; filename="') and "filename*=UTF-8''%E4%BC%9A%E8%AE%AE" in disposition

        hold_workers_back(first)
        queued = c.submit(SAMPLE, {"language": "en"})
        wait_until(lambda: c.get(queued["job_id"])["status"] == "queued", 120)
        waiting = c.create_job(SAMPLE)

    assert (data / "state" / "dynamodb.json").exists()

    # When the stack starts again with the same data folder
    with LocalStack(config(data)) as second:
        c = Client(second.url, owner="alice")

        # Then the finished job and its transcript are there
        again = c.get(done["job_id"])
        assert (
            again["status"] == "succeeded" and again["result"]["duration_seconds"] == done["result"]["duration_seconds"]
        )
        assert c.result_text(again, "txt") == text
        # the queued job runs (its message was sent again), the open upload still waits
        assert c.wait(queued["job_id"], timeout=180)["status"] == "succeeded"
        assert c.get(waiting["job_id"])["status"] == "pending"
        assert {j["job_id"] for j in c.list()["jobs"]} >= {done["job_id"], queued["job_id"], waiting["job_id"]}
        # and another owner still sees none of it
        assert Client(second.url, owner="bob").list()["jobs"] == []
