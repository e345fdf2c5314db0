"""Priority classes: the API field, the class queues, the weighted receive, and that every
retry path keeps a job's class (on moto)."""

from __future__ import annotations

import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from batchscribe.api_models import CreateJobRequest
from batchscribe.errors import InvalidTransition, OwnerAtCap, RateLimited
from batchscribe.jobs import JobApi
from batchscribe.lifecycle import Lifecycle
from batchscribe.models import ErrorInfo, JobMessage
from batchscribe.queue import ClassQueues, JobDispatcher
from batchscribe.repository import Counters, JobRepository
from batchscribe.settings import ApiSettings, LifecycleSettings
from batchscribe.state_machine import Transition
from gpu_container.worker.engines import Engine
from tests.conftest import OWNER_A, OWNER_B, Stack, reset_caches
from tests.helpers import call, create, deliver_uploads, post_upload, receive_all
from tests.integration.workers import make_worker

# ---- the API ---------------------------------------------------------------------------


def test_priority_defaults_to_normal_and_is_shown_and_filterable(aws_stack: Stack) -> None:
    plain = create()
    high = create(priority="high")
    low = create(priority="low")

    assert plain["priority"] == "normal"
    assert call("GET", f"/jobs/{high['job_id']}")[1]["priority"] == "high"
    for priority, expected in (("high", high), ("low", low), ("normal", plain)):
        status, listed = call("GET", "/jobs", query={"priority": priority})
        assert status == 200
        assert [j["job_id"] for j in listed["jobs"]] == [expected["job_id"]]
        assert listed["jobs"][0]["priority"] == priority
    status, listed = call("GET", "/jobs", query={"priority": "urgent"})
    assert status == 400 and listed["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("value", ["urgent", "HIGH", 1, None])
def test_unknown_priority_is_400_with_the_field(aws_stack: Stack, value: object) -> None:
    body = {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 10, "priority": value}
    status, answer = call("POST", "/jobs", body)
    assert status == 400
    assert answer["error"]["code"] == "invalid_request"
    assert [d["field"] for d in answer["error"]["details"]] == ["priority"]


def test_high_is_403_for_owners_not_allowed(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ApiSettings.env_name("high_priority_owners"), json.dumps([OWNER_A]))
    reset_caches()
    assert create(owner=OWNER_A, priority="high")["priority"] == "high"
    status, answer = call("POST", "/jobs", {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 10,
                                            "priority": "high"}, owner=OWNER_B)  # fmt: skip
    assert status == 403
    assert answer["error"]["code"] == "priority_not_allowed"
    assert create(owner=OWNER_B, priority="low")["priority"] == "low"  # other classes stay open


# ---- the class queues ------------------------------------------------------------------


def _queued(stack: Stack, priority: str) -> str:
    job = create(priority=priority)
    post_upload(job["upload"], b"RIFF....WAVEfmt ")
    deliver_uploads(stack)
    return str(job["job_id"])


def _ids(queue_url: str) -> list[str]:
    return [JobMessage.model_validate_json(m["Body"]).job_id for m in receive_all(queue_url)]


def test_intake_sends_each_job_to_its_class_queue(aws_stack: Stack) -> None:
    jobs = {p: _queued(aws_stack, p) for p in ("high", "normal", "low")}
    assert _ids(aws_stack.class_queue_urls["high"]) == [jobs["high"]]
    assert _ids(aws_stack.jobs_queue_url) == [jobs["normal"]]
    assert _ids(aws_stack.class_queue_urls["low"]) == [jobs["low"]]


def test_redrives_keep_the_class(aws_stack: Stack) -> None:
    job_id = _queued(aws_stack, "low")
    receive_all(aws_stack.class_queue_urls["low"])  # the message is lost
    lifecycle = Lifecycle.from_settings(LifecycleSettings.from_env())
    assert lifecycle.dead_letter(job_id).value == "redriven"
    assert _ids(aws_stack.class_queue_urls["low"]) == [job_id]
    lifecycle.send_again(JobRepository(aws_stack.table).get(job_id))  # the sweeper's path
    assert _ids(aws_stack.class_queue_urls["low"]) == [job_id]
    assert _ids(aws_stack.jobs_queue_url) == []


def test_dispatcher_routes_small_jobs_to_the_cpu_pools_class_queue() -> None:
    routing = LifecycleSettings(
        table_name="t",
        bucket_name="b",
        jobs_queue_url="gpu-normal",
        class_queue_urls={"high": "gpu-high", "low": "gpu-low"},
        small_jobs_queue_url="cpu-normal",
        small_class_queue_urls={"high": "cpu-high"},
        small_job_max_bytes=100,
    )
    d = JobDispatcher(routing)
    assert d.queue_for(1000, "high").url == "gpu-high"
    assert d.queue_for(1000).url == "gpu-normal"
    assert d.queue_for(10, "high").url == "cpu-high"
    assert d.queue_for(10, "low").url == "cpu-normal"  # a class without its own queue shares the main one


# ---- the weighted receive -------------------------------------------------------------


def _fill(stack: Stack, counts: dict[str, int]) -> None:
    sqs = boto3.client("sqs")
    urls: dict[str, str] = {"normal": stack.jobs_queue_url, **dict(stack.class_queue_urls.items())}
    for priority, n in counts.items():
        for i in range(n):
            sqs.send_message(
                QueueUrl=urls[priority], MessageBody=JobMessage(job_id=f"{priority}{i:04d}").model_dump_json()
            )


def _drain(queues: ClassQueues, n: int) -> list[str]:
    order = []
    for _ in range(n):
        got = queues.receive(wait_seconds=0, max_messages=1)
        assert len(got) == 1
        assert got[0].message is not None
        order.append(got[0].message.job_id.rstrip("0123456789"))
        queues.delete(got[0].receipt_handle)
    return order


def test_high_goes_first_when_nothing_was_passed_over(aws_stack: Stack) -> None:
    _fill(aws_stack, {"low": 6})
    queues = ClassQueues(aws_stack.jobs_queue_url, aws_stack.class_queue_urls)
    assert _drain(queues, 1) == ["low"]
    _fill(aws_stack, {"high": 1})
    assert _drain(queues, 2) == ["high", "low"]


def test_under_load_on_every_class_the_order_is_about_6_3_1_and_low_advances(aws_stack: Stack) -> None:
    _fill(aws_stack, {"high": 40, "normal": 40, "low": 40})
    queues = ClassQueues(aws_stack.jobs_queue_url, aws_stack.class_queue_urls)
    order = _drain(queues, 30)
    assert order.count("low") == 3
    assert order.count("normal") == 9
    assert order.count("high") == 18
    # low is never passed over more than its limit in a row
    gaps = [i for i, p in enumerate(order) if p == "low"]
    assert gaps[0] <= 9 and all(b - a <= 10 for a, b in itertools.pairwise(gaps))


def test_a_batch_receive_fills_from_the_next_classes_and_delete_reaches_each_queue(aws_stack: Stack) -> None:
    _fill(aws_stack, {"high": 2, "low": 5})
    queues = ClassQueues(aws_stack.jobs_queue_url, aws_stack.class_queue_urls)
    got = queues.receive(wait_seconds=0, max_messages=4)
    assert sorted(r.message.job_id[:4] for r in got if r.message) == ["high", "high", "low0", "low0"]
    for r in got:
        queues.delete(r.receipt_handle)
    assert queues.depth() == (3, 0)
    assert queues.depths()["low"] == (3, 0)


def test_a_message_handed_back_returns_to_its_class_queue(aws_stack: Stack) -> None:
    """Give-back (SIGTERM, not ours to take) changes the visibility of the message held, on
    the queue it came from: the job keeps its class."""
    _fill(aws_stack, {"low": 1})
    queues = ClassQueues(aws_stack.jobs_queue_url, aws_stack.class_queue_urls)
    [r] = queues.receive(wait_seconds=0)
    queues.extend(r.receipt_handle, 0)
    assert _ids(aws_stack.class_queue_urls["low"]) == ["low0000"]
    assert _ids(aws_stack.jobs_queue_url) == []


@pytest.mark.parametrize("priority", ["normal", "low"])
def test_an_idle_receive_sees_a_job_of_any_class_when_it_arrives(aws_stack: Stack, priority: str) -> None:
    """Every class empty: the receive long-polls them all at once, so a normal or low job that
    arrives during the wait is received then, not after the high queue's poll ran out."""
    queues = ClassQueues(aws_stack.jobs_queue_url, aws_stack.class_queue_urls)
    with ThreadPoolExecutor(1) as pool:
        receiving = pool.submit(queues.receive, wait_seconds=5, max_messages=10)
        time.sleep(0.3)  # the receive is waiting on every class
        assert not receiving.done()
        _fill(aws_stack, {priority: 1})
        got = receiving.result(timeout=4)  # inside the 5 s poll
    assert [r.message.job_id for r in got if r.message] == [f"{priority}0000"]
    queues.delete(got[0].receipt_handle)
    assert queues.put_back_kept(stop=True) == 0 and queues.depth() == (0, 0)


def test_scaler_backlog_is_weighted_by_class(aws_stack: Stack) -> None:
    _fill(aws_stack, {"high": 2, "normal": 3, "low": 1})
    queues = ClassQueues(aws_stack.jobs_queue_url, aws_stack.class_queue_urls)
    assert queues.weighted_depth() == (8, 0)  # 2x2 + 3 + ceil(0.5)
    receive_all(aws_stack.jobs_queue_url)
    receive_all(aws_stack.class_queue_urls["high"])
    assert queues.weighted_depth() == (1, 0)  # one low job still starts a worker


# ---- the per-owner create rate limit ---------------------------------------------------


@pytest.fixture
def rate_limited(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setenv(ApiSettings.env_name("create_rate_limit"), "10")
    monkeypatch.setenv(ApiSettings.env_name("create_rate_window_seconds"), "3600")
    reset_caches()
    return aws_stack


def test_50_parallel_creates_against_a_limit_of_10_give_exactly_10_created(rate_limited: Stack) -> None:
    """50 creates at once, each as its own Lambda environment would run it (its own JobApi,
    one shared table): the conditional counter lets exactly 10 through."""
    request = CreateJobRequest(filename="a.wav", content_type="audio/wav", size_bytes=10)

    def create_in_its_own_environment(_: int) -> str:
        api = JobApi.from_settings(ApiSettings.from_env())
        try:
            api.create_job(OWNER_A, request)
            return "created"
        except RateLimited:
            return "rate_limited"

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(create_in_its_own_environment, range(50)))
    assert outcomes.count("created") == 10 and outcomes.count("rate_limited") == 40, outcomes

    status, refused = call("POST", "/jobs", request.model_dump(exclude_none=True))  # and over HTTP
    assert status == 429 and refused["error"]["code"] == "rate_limited"
    assert 0 < refused["error"]["details"]["retry_after"] <= 3600
    # the limit is per owner: another caller still creates
    assert create(owner=OWNER_B)["status"] == "pending"


def test_rate_limited_answer_carries_retry_after(rate_limited: Stack) -> None:
    from batchscribe_cli.local import LocalContext
    from lambdas.api.handler import handler
    from tests.conftest import api_event

    body = {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 10}
    for _ in range(10):
        create()
    resp = handler(api_event("POST", "/jobs", body), LocalContext())
    assert resp["statusCode"] == 429
    headers = {**resp.get("headers", {}), **{k: v[-1] for k, v in resp.get("multiValueHeaders", {}).items()}}
    assert 0 < int(headers["Retry-After"]) <= 3600
    # an invalid request is refused before it is counted, and a refused create is not counted
    bad = handler(api_event("POST", "/jobs", {**body, "size_bytes": -1}, owner=OWNER_B), LocalContext())
    assert bad["statusCode"] == 400
    assert [create(owner=OWNER_B) for _ in range(10)]


def test_the_window_resets(aws_stack: Stack) -> None:
    now = [1000.0]
    counters = Counters(aws_stack.table, clock=lambda: now[0])
    assert [counters.count_create(OWNER_A, 2, 60) for _ in range(2)] == [1, 2]
    with pytest.raises(RateLimited) as refused:
        counters.count_create(OWNER_A, 2, 60)
    assert refused.value.retry_after == 20  # the window [960, 1020) ends in 20 s
    now[0] = 1020.0
    assert counters.count_create(OWNER_A, 2, 60) == 1


# ---- the per-owner running cap ---------------------------------------------------------


def test_running_cap_per_owner_is_a_slot_taken_at_claim_and_freed_at_every_exit(aws_stack: Stack) -> None:
    repo = JobRepository(aws_stack.table)
    a1, a2, a3 = (_queued(aws_stack, "normal") for _ in range(3))
    b1 = create(owner=OWNER_B)["job_id"]

    job = repo.claim(a1, "w1", -1, owner_cap=1)  # a lease that has already expired
    with pytest.raises(OwnerAtCap):
        repo.claim(a2, "w1", 60, owner_cap=1)
    assert repo.get(a2).status.value == "queued" and repo.get(a2).attempt == 0  # nothing changed
    assert repo.claim(a1, "w2", 60, owner_cap=1).attempt == 2  # its own slot: a take-over is not refused

    # every exit from running frees the slot: give back, then succeed, fail, cancel
    repo.give_back(a1, 2)
    job = repo.claim(a2, "w1", 60, owner_cap=1)
    repo.cancel(a2)
    job = repo.claim(a3, "w1", 60, owner_cap=1)
    repo.fail(a3, ErrorInfo(code="x", message="y"), attempt=job.attempt)
    job = repo.claim(a1, "w1", 60, owner_cap=1)
    assert dict(repo.slots.running()) == {job.owner_key: [a1]}
    with pytest.raises(InvalidTransition):  # b1 is pending: another owner is not capped by a's slot
        repo.claim(b1, "w1", 60, owner_cap=1)


def test_the_sweeper_frees_a_slot_an_interrupted_exit_left_behind(aws_stack: Stack) -> None:
    repo = JobRepository(aws_stack.table)
    a1, a2 = _queued(aws_stack, "normal"), _queued(aws_stack, "normal")
    job = repo.claim(a1, "w1", 60, owner_cap=1)
    repo._transition(a1, Transition.CANCEL, repo._update(Transition.CANCEL))  # the exit's second write never happened
    with pytest.raises(OwnerAtCap):
        repo.claim(a2, "w1", 60, owner_cap=1)
    lifecycle = Lifecycle.from_settings(LifecycleSettings.from_env())
    swept = lifecycle.sweep()
    assert (swept.slots_freed, swept.owners_running, swept.max_running_per_owner) == (1, 0, 0)
    assert repo.claim(a2, "w1", 60, owner_cap=1).status.value == "running"
    assert job.owner_key in dict(repo.slots.running())
    swept = lifecycle.sweep()  # the per-owner running gauges (metrics Swept_owners_running, ...)
    assert (swept.slots_freed, swept.owners_running, swept.max_running_per_owner) == (0, 1, 1)


def test_a_worker_leaves_a_job_over_its_owners_cap_queued_without_spending_a_receive(
    aws_stack: Stack, engines: dict[str, Engine]
) -> None:
    repo = JobRepository(aws_stack.table)
    a1, a2 = _queued(aws_stack, "normal"), _queued(aws_stack, "normal")
    repo.claim(a1, "elsewhere", 60, owner_cap=1)
    receive_all(aws_stack.jobs_queue_url)  # a1's message is held by the other worker
    boto3.client("sqs").send_message(
        QueueUrl=aws_stack.jobs_queue_url, MessageBody=JobMessage(job_id=a2).model_dump_json()
    )
    worker = make_worker(aws_stack, engines["faster-whisper"], max_running_per_owner=1, owner_cap_delay_seconds=0)
    [received] = worker.queue.receive(wait_seconds=0)

    assert worker.handle(received).value == "over_cap"
    assert repo.get(a2).status.value == "queued"
    [again] = boto3.client("sqs").receive_message(
        QueueUrl=aws_stack.jobs_queue_url, MessageSystemAttributeNames=["ApproximateReceiveCount"]
    )["Messages"]
    assert JobMessage.model_validate_json(again["Body"]).job_id == a2
    assert again["Attributes"]["ApproximateReceiveCount"] == "1"  # a fresh message: no step towards the DLQ


# ---- queue visibility ------------------------------------------------------------------


def test_a_queued_job_shows_its_class_position_and_estimate(aws_stack: Stack) -> None:
    for p in ("high", "high", "normal", "normal", "normal", "low"):
        _queued(aws_stack, p)
    mine = _queued(aws_stack, "normal")
    _queued(aws_stack, "normal")  # behind it: not counted

    status, job = call("GET", f"/jobs/{mine}")
    assert status == 200
    queue = job["queue"]
    assert queue["priority"] == "normal"
    assert queue["ahead"] == {"high": 2, "normal": 3}
    assert queue["position"] == 6
    assert queue["estimated_start_at"] is None  # no worker ran lately: nothing to measure

    counters = Counters(aws_stack.table)
    for _ in range(12):  # a worker of the GPU pool claimed 12 jobs in the last minutes
        counters.count_claim(aws_stack.jobs_queue_url)
    queue = call("GET", f"/jobs/{mine}")[1]["queue"]
    assert queue["claims_per_minute"] > 0
    wait = _seconds(queue["estimated_start_at"]) - time.time()
    assert 0 < wait <= 60 * 5 / queue["claims_per_minute"] + 5

    low = call("GET", "/jobs", query={"priority": "low"})[1]["jobs"][0]
    assert low["queue"] is None  # a listing shows no positions (it would cost reads per job)
    assert call("GET", f"/jobs/{low['job_id']}")[1]["queue"]["ahead"] == {"high": 2, "normal": 5, "low": 0}


def test_only_queued_jobs_show_a_queue(aws_stack: Stack) -> None:
    pending = create()
    assert call("GET", f"/jobs/{pending['job_id']}")[1]["queue"] is None


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
