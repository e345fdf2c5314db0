"""SQS adapter for the jobs queues, the weighted receive across a pool's priority classes,
and the dispatcher that picks a job's queue.

SQS has no priority inside a queue, so each pool has one queue per class (`high`, `normal`,
`low`). A job's message always goes to its class's queue (first send, sweeper redrive, dead
letter redrive; a give-back only changes the visibility of the message it holds), so a job
keeps its class through every retry path.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batchscribe import aws
from batchscribe.models import DEFAULT_PRIORITY, PRIORITIES, JobMessage, MessageReason, Priority
from batchscribe.resources import PASS_OVER_LIMIT, SCALE_WEIGHTS
from batchscribe.settings import RoutingSettings


@dataclass(frozen=True)
class Received:
    message: JobMessage | None  # None: a body that is not a job message (poison)
    receipt_handle: str
    receive_count: int
    message_id: str
    raw_body: str


class JobQueue:
    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def _sqs(self) -> Any:
        return aws.client("sqs")

    def send(self, message: JobMessage, delay_seconds: int = 0) -> None:
        self._sqs.send_message(QueueUrl=self.url, MessageBody=message.model_dump_json(), DelaySeconds=delay_seconds)

    def receive(self, wait_seconds: int = 20, max_messages: int = 1) -> list[Received]:
        resp = self._sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        out = []
        for msg in resp.get("Messages", []):
            try:
                parsed: JobMessage | None = JobMessage.model_validate_json(msg["Body"])
            except ValueError:
                parsed = None
            out.append(
                Received(
                    message=parsed,
                    receipt_handle=msg["ReceiptHandle"],
                    receive_count=int(msg.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
                    message_id=msg["MessageId"],
                    raw_body=msg["Body"],
                )
            )
        return out

    def delete(self, receipt_handle: str) -> None:
        try:
            self._sqs.delete_message(QueueUrl=self.url, ReceiptHandle=receipt_handle)
        except ClientError as exc:
            # A handle gone stale (the message came back to someone else) is not our failure.
            if exc.response["Error"]["Code"] not in ("ReceiptHandleIsInvalid", "InvalidParameterValue"):
                raise

    def extend(self, receipt_handle: str, seconds: int) -> None:
        self._sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds)

    def depth(self) -> tuple[int, int]:
        """(visible, in flight) messages, approximately."""
        attrs = self._sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


class LongPolls:
    """Long polls of several queues at once, for a receive that found every class empty: one
    class long-polled alone would leave a message of another waiting out the whole poll
    (`poll_seconds`, 10 s deployed). The first poll that answers with messages ends the wait;
    polls still under way go on, and what they bring is kept for the next receive. What the
    caller cannot take soon goes back to its queue (`put_back`)."""

    def __init__(self, queues: Mapping[Priority, JobQueue]) -> None:
        self.queues = queues
        self.rank = {p: i for i, p in enumerate(queues)}
        self.running: dict[Priority, Future[list[Received]]] = {}
        self.kept: list[tuple[Priority, Received]] = []
        self.errors: list[BaseException] = []
        self.pool: ThreadPoolExecutor | None = None

    def poll(self, wait_seconds: int, max_messages: int) -> None:
        """Start a long poll of every queue not being polled, and wait until one brings
        messages or every poll ended (at most `wait_seconds`, and a little more)."""
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=len(self.queues), thread_name_prefix="long-poll")
        for p, q in self.queues.items():
            if p not in self.running:
                self.running[p] = self.pool.submit(q.receive, wait_seconds, max_messages)
        deadline = time.monotonic() + wait_seconds + 5
        while self.running and not self.kept and time.monotonic() < deadline:
            wait_for(list(self.running.values()), timeout=deadline - time.monotonic(), return_when=FIRST_COMPLETED)
            self._harvest()

    def _harvest(self) -> None:
        for p, future in list(self.running.items()):
            if not future.done():
                continue
            del self.running[p]
            error = future.exception()
            if error is not None:
                self.errors.append(error)
            else:
                self.kept += [(p, r) for r in future.result()]
        self.kept.sort(key=lambda kept: self.rank[kept[0]])  # a higher class first (stable)

    def take(self, max_messages: int) -> list[tuple[Priority, Received]]:
        """Up to `max_messages` of what the polls brought, a higher class first."""
        self._harvest()
        out, self.kept = self.kept[:max_messages], self.kept[max_messages:]
        return out

    def failure(self) -> BaseException | None:
        """The first error of a poll since the last call (the others are the same kind)."""
        error = self.errors[0] if self.errors else None
        self.errors.clear()
        return error

    def put_back(self, wait: bool = False) -> int:
        """Everything kept back on its queue, visible at once (with `wait`, after the polls
        under way ended too, and the polling stopped); how many went back."""
        if wait:
            wait_for(list(self.running.values()))
        self._harvest()
        kept, self.kept = self.kept, []
        for p, r in kept:
            with contextlib.suppress(ClientError, BotoCoreError):  # its visibility runs out instead
                self.queues[p].extend(r.receipt_handle, 0)
        if wait and self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
        return len(kept)


def class_urls(main_url: str, others: Mapping[Priority, str]) -> dict[Priority, str]:
    """A pool's queue URL per priority class, highest first (`normal` is the main queue; a
    class without its own queue shares the main one)."""
    return {p: main_url if p == "normal" else others.get(p, main_url) for p in PRIORITIES}


@dataclass
class ClassQueues:
    """A pool's queues, one per priority class, that a worker receives from in a weighted
    order: highest class first, but a lower class that was passed over `PASS_OVER_LIMIT[c]`
    receives in a row goes first on the next one. Under load on every class that serves about
    6 high : 3 normal : 1 low, and a low job waits at most ~10 receives once it is at the
    head of its queue: nothing starves. An empty class is never counted as passed over.

    Same interface as one JobQueue (receive, delete, extend, depth); a receipt handle is
    remembered with the queue it came from, so delete/extend reach the right queue."""

    main_url: str
    others: Mapping[Priority, str] = field(default_factory=dict)
    pass_over_limit: Mapping[str, int] = field(default_factory=lambda: dict(PASS_OVER_LIMIT))

    def __post_init__(self) -> None:
        urls = class_urls(self.main_url, self.others)
        distinct: dict[str, Priority] = {}
        for p, url in urls.items():
            distinct.setdefault(url, p)
        # classes that share a queue are one class here (the highest of them)
        self.queues: dict[Priority, JobQueue] = {p: JobQueue(url) for url, p in distinct.items()}
        self.passed_over: dict[Priority, int] = dict.fromkeys(self.queues, 0)
        self._source: dict[str, JobQueue] = {}
        self.main = JobQueue(self.main_url)
        self.long_polls = LongPolls(self.queues)

    @property
    def url(self) -> str:
        return self.main_url

    def order(self) -> list[Priority]:
        """Classes in the order the next receive tries them."""
        ranked = list(self.queues)  # highest first
        due = [p for p in ranked if self.passed_over[p] >= self.pass_over_limit.get(p, math.inf)]
        due.sort(key=lambda p: -self.passed_over[p] / self.pass_over_limit[p])
        return due + [p for p in ranked if p not in due]

    def receive(self, wait_seconds: int = 20, max_messages: int = 1) -> list[Received]:
        order = self.order()
        if len(order) == 1:
            return self._remember(order[0], self.queues[order[0]].receive(wait_seconds, max_messages))
        out = self._taken(self.long_polls.take(max_messages))  # what earlier long polls brought
        if out:
            return out
        tried: list[Priority] = []
        served: list[Priority] = []
        for p in order:
            if len(out) >= max_messages:
                break
            got = self.queues[p].receive(wait_seconds=0, max_messages=max_messages - len(out))
            out.extend(self._remember(p, got))
            tried.append(p)
            self.passed_over[p] = 0  # served, or empty: either way nothing of it waits on us
            if got:
                served.append(p)
        if not out and wait_seconds > 0:  # every class empty: long-poll them all at once
            self.long_polls.poll(wait_seconds, max_messages)
            out = self._taken(self.long_polls.take(max_messages))
            error = self.long_polls.failure()
            if not out and error is not None:
                raise error
        if served:  # lower classes left untried while a higher one was served: passed over
            rank = {p: i for i, p in enumerate(self.queues)}
            top = min(rank[p] for p in served)
            for p in self.queues:
                if p not in tried and rank[p] > top:
                    self.passed_over[p] += 1
        return out

    def _taken(self, taken: list[tuple[Priority, Received]]) -> list[Received]:
        return [r for p, r in taken for r in self._remember(p, [r])]

    def put_back_kept(self, stop: bool = False) -> int:
        """What long polls brought and no receive took yet, back on its queue, visible at once
        (the caller has no room for it now; with `stop`, the polls under way are waited for and
        polling stops: the worker is going)."""
        return self.long_polls.put_back(wait=stop)

    def _remember(self, priority: Priority, received: list[Received]) -> list[Received]:
        for r in received:
            self._source[r.receipt_handle] = self.queues[priority]
        return received

    def delete(self, receipt_handle: str) -> None:
        self._source.pop(receipt_handle, self.main).delete(receipt_handle)

    def extend(self, receipt_handle: str, seconds: int) -> None:
        queue = self._source.get(receipt_handle, self.main)
        if seconds == 0:  # handed back at once: the worker holds it no longer
            self._source.pop(receipt_handle, None)
        queue.extend(receipt_handle, seconds)

    def send_later(self, received: Received, seconds: int) -> None:
        """Put a message back as a fresh one, invisible for `seconds`, on the queue it came
        from: unlike a visibility change this does not count a receive towards the DLQ (a job
        left queued on purpose, e.g. its owner at the running cap, must not dead-letter)."""
        queue = self._source.get(received.receipt_handle, self.main)
        if received.message is not None:
            queue.send(received.message, delay_seconds=max(0, min(900, seconds)))
        self.delete(received.receipt_handle)

    def depth(self) -> tuple[int, int]:
        """(visible, in flight) over every class, approximately."""
        visible = in_flight = 0
        for q in self.queues.values():
            v, f = q.depth()
            visible, in_flight = visible + v, in_flight + f
        return visible, in_flight

    def depths(self) -> dict[Priority, tuple[int, int]]:
        return {p: q.depth() for p, q in self.queues.items()}

    def weighted_depth(self) -> tuple[int, int]:
        """(visible, in flight) with each class counted by SCALE_WEIGHTS (rounded up, and at
        least 1 while anything waits): what the scaler sizes a pool from."""
        visible = in_flight = 0.0
        any_visible = False
        for p, (v, f) in self.depths().items():
            visible += SCALE_WEIGHTS[p] * v
            in_flight += SCALE_WEIGHTS[p] * f
            any_visible = any_visible or v > 0
        return max(math.ceil(visible), 1 if any_visible else 0), math.ceil(in_flight)


class JobDispatcher:
    """Sends a job's message to its priority class's queue in the pool that runs it: small
    uploads to the CPU pool when the deployment has one, everything else to the GPU pool."""

    def __init__(self, routing: RoutingSettings) -> None:
        self.routing = routing
        self.default = class_urls(routing.jobs_queue_url, routing.class_queue_urls)
        self.small = (
            class_urls(routing.small_jobs_queue_url, routing.small_class_queue_urls)
            if routing.small_jobs_queue_url
            else None
        )

    def classes_for(self, size: int, model: str | None = None) -> dict[Priority, str]:
        """The queue URL of each class in the pool that runs a job of `size` bytes asking for
        `model`: the CPU pool's for a small upload that does not ask for a model only the GPU
        pool serves; the GPU pool's otherwise."""
        if self.small is not None and self.routing.small_pool_takes(size, model):
            return self.small
        return self.default

    def queue_for(self, size: int, priority: Priority = DEFAULT_PRIORITY, model: str | None = None) -> JobQueue:
        return JobQueue(self.classes_for(size, model)[priority])

    def send(
        self,
        job_id: str,
        size: int,
        reason: MessageReason,
        priority: Priority = DEFAULT_PRIORITY,
        model: str | None = None,
    ) -> None:
        self.queue_for(size, priority, model).send(JobMessage(job_id=job_id, reason=reason))
