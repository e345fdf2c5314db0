"""The emulator's own races, closed by batchscribe_cli.moto_atomic (the local stack and the tests
apply it): a message sent while another is deleted is never lost, as on SQS."""

from __future__ import annotations

import linecache
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import SQSBackend, sqs_backends

from batchscribe_cli import moto_atomic


@pytest.fixture
def backend() -> Iterator[SQSBackend]:
    moto_atomic.apply()
    with mock_aws():
        b = sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
        b.create_queue("jobs")
        yield b


def test_a_message_sent_during_a_delete_is_kept(backend: SQSBackend) -> None:
    """moto's delete rebuilds the queue's message list and then stores it; a send landing
    between the two used to vanish. The send is made to land exactly there: on the line that
    stores the list, a second thread sends and is given half a second to get through."""
    backend.send_message("jobs", "first")
    [first] = backend.receive_message("jobs", 1, 0, 30)
    assert first.receipt_handle is not None
    sent = threading.Event()
    sender: list[threading.Thread] = []

    def send_now() -> None:
        backend.send_message("jobs", "second")
        sent.set()

    def at_the_store(frame: FrameType, event: str, _arg: Any) -> Any:
        if event == "line" and not sender and "self._messages = new_messages" in _line(frame):
            sender.append(threading.Thread(target=send_now))
            sender[0].start()
            sent.wait(0.5)  # it gets through now unless the delete holds the queue's lock
        return at_the_store

    def trace(frame: FrameType, event: str, _arg: Any) -> Any:
        return at_the_store if frame.f_code.co_name == "delete_message" else None

    sys.settrace(trace)
    try:
        backend.delete_message("jobs", first.receipt_handle)
    finally:
        sys.settrace(None)
    assert sender, "moto's delete no longer stores a rebuilt list: revisit moto_atomic"
    sender[0].join(10)
    assert sent.is_set()
    assert [m.body for m in backend.receive_message("jobs", 10, 0, 30)] == ["second"]


def _line(frame: FrameType) -> str:
    return linecache.getline(frame.f_code.co_filename, frame.f_lineno)
