"""Per-job webhooks: where a callback may go (the SSRF guard), how it is signed and verified,
and how one delivery is made.

A job created with `callback_url` gets one POST when it ends: the job summary as JSON, with

    Batchscribe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
    Batchscribe-Event-Id:  <job_id>.<status>   (the same on every retry: deduplicate on it)

The secret is the deployment's (AWS Secrets Manager; docs/deploy.md "Webhooks"). A receiver checks
the signature and the age of `t` with `verify` (or the few lines docs/deploy.md shows).

Only public `https://` URLs are called (batchscribe.urlguard): checked when the job is
created, resolved again at delivery time, and the connection made to the address checked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import urllib3

from batchscribe import errors, urlguard
from batchscribe.models import Job, JobSummary, iso
from batchscribe.repository import JobRepository
from batchscribe.settings import WebhookSettings
from batchscribe.urlguard import Resolver, Target, system_resolver

SIGNATURE_HEADER = "Batchscribe-Signature"
EVENT_ID_HEADER = "Batchscribe-Event-Id"
DEFAULT_TOLERANCE_SECONDS = 300


class CallbackRefused(urlguard.UrlRefused):
    """A callback URL this service will not call."""

    code = "invalid_callback_url"
    field = "callback_url"


def check_url(url: str, allow_private: bool = False) -> Target:
    """The parts of a callback URL this service will call, or CallbackRefused saying why."""
    return urlguard.check_url(url, allow_private, CallbackRefused)


def resolve_public(target: Target, resolver: Resolver = system_resolver, allow_private: bool = False) -> str:
    """The checked address to POST to (batchscribe.urlguard), or CallbackRefused."""
    return urlguard.resolve_public(target, resolver, allow_private, CallbackRefused)


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: bytes,
    header: str,
    body: bytes,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether `header` (the Batchscribe-Signature value) signs `body` with `secret`, made
    within `tolerance_seconds` of now (a replayed old delivery fails)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


def payload(job: Job) -> dict[str, Any]:
    """What a callback says: the job's summary, the same the status-change event carries
    (no URLs: they expire; GET the job for them)."""
    return {"type": "job.finished", **JobSummary.of(job).as_json()}


@dataclass(frozen=True)
class Delivery:
    ok: bool
    status: int | None  # the receiver's HTTP status; None when no answer
    error: str | None = None
    retry: bool = False  # worth trying again (network error, 5xx, 408, 429)


def deliver(
    url: str,
    event_id: str,
    body: dict[str, Any],
    secret: bytes,
    timeout_seconds: float = 10,
    resolver: Resolver = system_resolver,
    allow_private: bool = False,
    clock: Callable[[], float] = time.time,
) -> Delivery:
    """One POST of `body` to `url`, signed, to the address the guard checked; no redirects
    followed (a redirect could point anywhere)."""
    try:
        target = check_url(url, allow_private)
        address = resolve_public(target, resolver, allow_private)
    except CallbackRefused as exc:
        return Delivery(ok=False, status=None, error=str(exc), retry=False)
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "batchscribe-webhook/1",
        SIGNATURE_HEADER: sign(secret, data, int(clock())),
        EVENT_ID_HEADER: event_id,
        "Host": target.host_header,
    }
    timeout = urllib3.Timeout(connect=min(5.0, timeout_seconds), read=timeout_seconds)
    pool = urlguard.pinned_pool(target, address, timeout)
    try:
        with pool:
            resp = pool.urlopen("POST", target.path, body=data, headers=headers, redirect=False, preload_content=True)
    except urllib3.exceptions.HTTPError as exc:
        return Delivery(ok=False, status=None, error=f"{type(exc).__name__}: {exc}"[:300], retry=True)
    if 200 <= resp.status < 300:
        return Delivery(ok=True, status=resp.status)
    retry = resp.status >= 500 or resp.status in (408, 429)
    return Delivery(ok=False, status=resp.status, error=f"the receiver answered {resp.status}", retry=retry)


# ---- the sender: one job's callback, one try ---------------------------------------------


class SendOutcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # not answered 2xx; tried again after `Sent.retry_after`
    FAILED = "failed"  # refused by the guard, a 4xx, or out of attempts
    NOTHING_TO_SEND = "nothing_to_send"  # no callback, already settled, or the job has not ended
    DUPLICATE = "duplicate"  # another sender recorded a try meanwhile


@dataclass(frozen=True)
class Sent:
    outcome: SendOutcome
    retry_after: int | None = None


MAX_RETRY_SECONDS = 12 * 3600  # SQS's longest visibility timeout


@dataclass
class WebhookSender:
    settings: WebhookSettings
    repo: JobRepository
    secret: bytes
    resolver: Resolver = system_resolver
    clock: Callable[[], float] = time.time

    def send(self, job_id: str) -> Sent:
        """Try the job's callback once and record how it went on the job."""
        try:
            job = self.repo.get(job_id)
        except errors.JobNotFound:
            return Sent(SendOutcome.NOTHING_TO_SEND)
        callback = job.callback
        if callback is None or callback.state != "pending" or not job.status.terminal:
            return Sent(SendOutcome.NOTHING_TO_SEND)
        s = self.settings
        result = deliver(
            callback.url,
            f"{job.job_id}.{job.status.value}",
            payload(job),
            self.secret,
            timeout_seconds=s.callback_timeout_seconds,
            resolver=self.resolver,
            allow_private=s.allow_private,
            clock=self.clock,
        )
        attempts = callback.attempts + 1
        update: dict[str, Any] = {"attempts": attempts, "last_status": result.status, "last_error": result.error}
        if result.ok:
            update |= {"state": "delivered", "delivered_at": iso(self.clock())}
            sent = Sent(SendOutcome.DELIVERED)
        elif result.retry and attempts < s.callback_max_attempts:
            sent = Sent(SendOutcome.RETRY, min(MAX_RETRY_SECONDS, s.callback_retry_seconds * 2 ** (attempts - 1)))
        else:
            update["state"] = "failed"
            sent = Sent(SendOutcome.FAILED)
        if not self.repo.record_callback(job.job_id, callback.model_copy(update=update), callback.attempts):
            return Sent(SendOutcome.DUPLICATE)
        return sent
