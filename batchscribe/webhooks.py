"""Per-job webhooks: where a callback may go (the SSRF guard), how it is signed and verified,
and how one delivery is made.

A job created with `callback_url` gets one POST when it ends: the job summary as JSON, with

    Batchscribe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
    Batchscribe-Event-Id:  <job_id>.<status>   (the same on every retry: deduplicate on it)

The secret is the deployment's (AWS Secrets Manager; README "Webhooks"). A receiver checks
the signature and the age of `t` with `verify` (or the few lines the README shows).

Only public `https://` URLs are called: the URL is checked when the job is created, and the
host is resolved again at delivery time and the connection made to the address that was
checked (no DNS rebinding to an internal address in between). Private, loopback, link-local
(the instance metadata service), shared, multicast and reserved addresses are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import urllib3

from batchscribe import errors
from batchscribe.models import Job, iso
from batchscribe.repository import JobRepository
from batchscribe.settings import WebhookSettings

SIGNATURE_HEADER = "Batchscribe-Signature"
EVENT_ID_HEADER = "Batchscribe-Event-Id"
MAX_URL_LENGTH = 2048
DEFAULT_TOLERANCE_SECONDS = 300

Resolver = Callable[[str, int], list[str]]


class CallbackRefused(errors.BadRequest):
    """A callback URL this service will not call."""

    code = "invalid_callback_url"


def _blocked(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str  # with the query


def check_url(url: str, allow_private: bool = False) -> Target:
    """The parts of a callback URL this service will call, or CallbackRefused saying why.
    `allow_private` (the local stack only) also takes `http://` and private addresses."""
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(f"callback_url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackRefused(f"callback_url is not a valid URL: {exc}") from exc
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise CallbackRefused("callback_url must be an https:// URL")
    if parts.username or parts.password:
        raise CallbackRefused("callback_url may not carry credentials; authenticate the call by its signature")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise CallbackRefused("callback_url has no host")
    if parts.fragment:
        raise CallbackRefused("callback_url may not have a #fragment")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
        internal_name = host.lower() == "localhost" or host.lower().endswith((".localhost", ".internal", ".local"))
        if internal_name and not allow_private:
            raise CallbackRefused(f"callback_url host {host!r} is not a public address") from None
    if literal is not None and _blocked(str(literal)) and not allow_private:
        raise CallbackRefused(f"callback_url address {host} is not a public address")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(
        url=url, scheme=parts.scheme, host=host, port=port or (443 if parts.scheme == "https" else 80), path=path
    )


def system_resolver(host: str, port: int) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def resolve_public(target: Target, resolver: Resolver = system_resolver, allow_private: bool = False) -> str:
    """The address to connect to: every address the host resolves to must be public (one
    private answer among public ones is refused too: the choice would be the attacker's)."""
    try:
        addresses = resolver(target.host, target.port)
    except OSError as exc:
        raise CallbackRefused(f"callback_url host {target.host!r} does not resolve: {exc}") from exc
    if not addresses:
        raise CallbackRefused(f"callback_url host {target.host!r} does not resolve")
    if not allow_private:
        bad = [a for a in addresses if _blocked(a)]
        if bad:
            raise CallbackRefused(f"callback_url host {target.host!r} resolves to a non-public address ({bad[0]})")
    return addresses[0]


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
    """What a callback says: the job's summary (no URLs: they expire; GET the job for them)."""
    body: dict[str, Any] = {
        "type": "job.finished",
        "job_id": job.job_id,
        "status": job.status.value,
        "attempt": job.attempt,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "filename": job.input.filename,
    }
    if job.error:
        body["error"] = job.error.model_dump()
    if job.result:
        body["result"] = {
            "language": job.result.language,
            "duration_seconds": job.result.duration_seconds,
            "compute_seconds": job.result.compute_seconds,
            "cost_usd": job.result.cost_usd,
            "formats": sorted(job.result.outputs),
        }
    return body


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
        "Host": target.host if target.port in (80, 443) else f"{target.host}:{target.port}",
    }
    timeout = urllib3.Timeout(connect=min(5.0, timeout_seconds), read=timeout_seconds)
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            address,
            target.port,
            server_hostname=target.host,
            assert_hostname=target.host,
            timeout=timeout,
            retries=False,
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, retries=False)
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
