"""The idle worker's long polls of its priority classes (batchscribe.queue.LongPolls): all
classes at once, the first answer ends the wait, what a later answer brings is kept for the
next receive or put back. Fake queues that answer when the test says so: no AWS, no timing."""

from __future__ import annotations

import threading
from concurrent.futures import wait as wait_for

from batchscribe.queue import LongPolls, Received


def received(name: str) -> Received:
    return Received(message=None, receipt_handle=f"rh-{name}", receive_count=1, message_id=name, raw_body=name)


class HeldQueue:
    """A queue whose long poll answers only once `answer` is called (with what it brings)."""

    def __init__(self) -> None:
        self.answered = threading.Event()
        self.messages: list[Received] = []
        self.polls = 0
        self.extended: list[tuple[str, int]] = []

    def answer(self, *names: str) -> None:
        self.messages = [received(n) for n in names]
        self.answered.set()

    def receive(self, wait_seconds: int = 20, max_messages: int = 1) -> list[Received]:
        self.polls += 1
        assert self.answered.wait(30), "the test never answered this poll"
        out, self.messages = self.messages, []
        return out

    def extend(self, receipt_handle: str, seconds: int) -> None:
        self.extended.append((receipt_handle, seconds))


def test_a_message_of_any_class_ends_the_wait_and_a_later_answer_is_kept_for_the_next_receive() -> None:
    high, normal, low = HeldQueue(), HeldQueue(), HeldQueue()
    polls = LongPolls({"high": high, "normal": normal, "low": low})  # type: ignore[dict-item]

    normal.answer("n1")  # a normal job while high is still being long-polled
    polls.poll(wait_seconds=20, max_messages=5)

    assert [r.message_id for _, r in polls.take(5)] == ["n1"]
    assert set(polls.running) == {"high", "low"}  # every class was polled at once; those two still are
    low.answer("l1", "l2")  # the low poll, still under way, answers after the wait ended
    polls.poll(wait_seconds=20, max_messages=5)  # the next receive: low's answer is what it gets
    assert [(p, r.message_id) for p, r in polls.take(5)] == [("low", "l1"), ("low", "l2")]
    assert set(polls.running) == {"high"} and high.polls <= 1  # high's first poll still runs
    high.answer()
    assert polls.put_back(wait=True) == 0 and not (high.extended or normal.extended or low.extended)


def test_what_no_receive_took_goes_back_to_its_own_queue_when_the_worker_stops() -> None:
    high, low = HeldQueue(), HeldQueue()
    polls = LongPolls({"high": high, "low": low})  # type: ignore[dict-item]
    high.answer("h1")
    polls.poll(wait_seconds=20, max_messages=1)
    assert [(p, r.message_id) for p, r in polls.take(1)] == [("high", "h1")]

    low.answer("l1")  # arrives after the receive returned; the worker is stopping
    assert polls.put_back(wait=True) == 1
    assert low.extended == [("rh-l1", 0)] and high.extended == []  # visible again at once, on its queue
    assert polls.pool is None  # polling stopped


def test_more_than_the_caller_takes_is_kept_in_class_order() -> None:
    high, normal = HeldQueue(), HeldQueue()
    polls = LongPolls({"high": high, "normal": normal})  # type: ignore[dict-item]
    normal.answer("n1", "n2")
    high.answer("h1")
    polls.poll(wait_seconds=20, max_messages=3)
    wait_for(list(polls.running.values()))  # both answered: whatever finished first
    assert [r.message_id for _, r in polls.take(1)] == ["h1"]
    assert [r.message_id for _, r in polls.take(5)] == ["n1", "n2"]


def test_a_failed_poll_is_reported_once_nothing_arrived() -> None:
    class Broken(HeldQueue):
        def receive(self, wait_seconds: int = 20, max_messages: int = 1) -> list[Received]:
            raise ConnectionError("no route")

    quiet = HeldQueue()
    polls = LongPolls({"high": Broken(), "normal": quiet})  # type: ignore[dict-item]
    quiet.answer()
    polls.poll(wait_seconds=1, max_messages=1)
    assert polls.take(1) == []
    error = polls.failure()
    assert isinstance(error, ConnectionError) and polls.failure() is None
