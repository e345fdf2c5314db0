"""Input by URL: a job created with `source_url` has no upload; its worker fetches the file.

The URL passes the same guard as callbacks (batchscribe.urlguard): public `https://` only,
checked at create, resolved again at each fetch and connected to the address checked. The
fetch has limits: the job's size cap (its `size_bytes`, else the deployment's upload limit),
checked against Content-Length before a byte is read and counted while streaming to disk; a
timeout per read and one for the whole transfer; at most `MAX_REDIRECTS` redirects, each hop
checked like the first. A signed URL keeps its signature in the job record for the worker,
and shows without its query string everywhere else (`redacted`).

An `s3://bucket/key` the caller can read is sent as a presigned `https://` URL, made with the
caller's own credentials (the CLI does it), so the deployment's roles need no access to other
buckets and S3 itself checks that the caller may read the object.

Failures: a URL the guard refuses (a host that does not resolve included), a refused
connection, a TLS error, an answer 4xx (but 408 and 429) or too many redirects are permanent
(`source_unreachable`, with the cause), a file over the cap is `source_too_large`; timeouts,
dropped connections, 5xx, 408 and 429 are transient (the job is retried, up to its attempts).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import urllib3

from batchscribe import errors, urlguard
from batchscribe.urlguard import Resolver, Target, system_resolver

MAX_REDIRECTS = 5
CHUNK_BYTES = 256 * 1024  # each piece is written, then the limits and `stop` looked at
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "batchscribe-fetch/1"


class SourceRefused(urlguard.UrlRefused):
    """A source URL this service will not fetch."""

    code = "invalid_source_url"
    field = "source_url"


def check_source(url: str, allow_private: bool = False) -> Target:
    """The checked parts of a job's source URL, or SourceRefused (400) saying why."""
    return urlguard.check_url(url, allow_private, SourceRefused)


def redacted(url: str) -> str:
    """The URL without its query string and fragment (a presigned URL's signature)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def filename_of(url: str) -> str:
    """The file name a URL's path ends with (`source` when it ends with none)."""
    return unquote(urlsplit(url).path.rstrip("/").rpartition("/")[2]) or "source"


class FetchFailed(Exception):
    """The source could not be fetched: `permanent` says whether trying again can help."""

    def __init__(self, message: str, code: str = errors.SOURCE_UNREACHABLE, *, permanent: bool) -> None:
        super().__init__(message)
        self.code = code
        self.permanent = permanent


class FetchStopped(Exception):
    """The caller's `stop` said to give up (the job was cancelled, or the worker stops)."""


@dataclass(frozen=True)
class Fetched:
    size: int
    content_type: str | None
    redirects: int


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    timeout_seconds: float = 30  # to connect, and between two reads
    max_seconds: float = 1800  # the whole transfer
    max_redirects: int = MAX_REDIRECTS


def fetch(
    url: str,
    dest: Path,
    limits: FetchLimits,
    *,
    resolver: Resolver = system_resolver,
    allow_private: bool = False,
    stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
) -> Fetched:
    """GET `url` into `dest` within `limits`, or raise FetchFailed (or FetchStopped)."""
    started = clock()
    timeout = urllib3.Timeout(connect=min(10.0, limits.timeout_seconds), read=limits.timeout_seconds)
    for hop in range(limits.max_redirects + 1):
        try:
            target = urlguard.check_url(url, allow_private, SourceRefused)
            address = urlguard.resolve_public(target, resolver, allow_private, SourceRefused)
        except SourceRefused as exc:
            # a redirect's target, or a name that resolves elsewhere than when it was checked
            raise FetchFailed(f"{exc.message} ({redacted(url)})", permanent=True) from exc
        headers = {"Host": target.host_header, "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        with urlguard.pinned_pool(target, address, timeout) as pool:
            try:
                resp = pool.urlopen("GET", target.path, headers=headers, redirect=False, preload_content=False)
            except urllib3.exceptions.HTTPError as exc:
                raise _not_fetched(url, exc) from exc
            try:
                if resp.status in REDIRECTS and resp.headers.get("Location"):
                    url = urljoin(url, resp.headers["Location"])
                    continue
                _check_answer(resp, url, limits.max_bytes)
                size = _stream(resp, dest, url, limits, started, stop, clock)
                return Fetched(size=size, content_type=resp.headers.get("Content-Type"), redirects=hop)
            finally:
                resp.release_conn()
    raise FetchFailed(f"{redacted(url)}: more than {limits.max_redirects} redirects", permanent=True)


def _not_fetched(url: str, exc: urllib3.exceptions.HTTPError) -> FetchFailed:
    """A request that got no answer. What cannot succeed if tried again fails the job at once
    (`source_unreachable`, with the cause): the server refused the connection, or TLS failed
    (a plain-http server, a certificate that does not match or has expired). A timeout or a
    dropped connection may pass: transient."""
    cause = _cause(exc)
    if isinstance(exc, urllib3.exceptions.SSLError) or isinstance(cause, ssl.SSLError):
        reason = getattr(cause, "reason", None) or getattr(cause, "verify_message", None) or str(cause or exc)
        return FetchFailed(f"could not fetch {redacted(url)}: TLS error ({reason})"[:500], permanent=True)
    if isinstance(cause, ConnectionRefusedError):
        return FetchFailed(f"could not fetch {redacted(url)}: connection refused", permanent=True)
    return FetchFailed(f"could not fetch {redacted(url)}: {type(exc).__name__}: {exc}"[:500], permanent=False)


def _cause(exc: BaseException) -> BaseException | None:
    """The innermost error under `exc` (urllib3 wraps the socket's and ssl's)."""
    inner = None
    seen = exc.__cause__ or exc.__context__
    while seen is not None and inner is not seen:
        inner = seen
        seen = seen.__cause__ or seen.__context__
    return inner


def _check_answer(resp: urllib3.BaseHTTPResponse, url: str, max_bytes: int) -> None:
    if resp.status != 200:
        transient = resp.status >= 500 or resp.status in (408, 429)
        hint = "" if transient else "; check that the URL works (a presigned one may have expired)"
        raise FetchFailed(f"{redacted(url)} answered HTTP {resp.status}{hint}", permanent=not transient)
    length = resp.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise FetchFailed(
            f"{redacted(url)} is {int(length)} bytes, more than this job's limit of {max_bytes} bytes",
            errors.SOURCE_TOO_LARGE,
            permanent=True,
        )


def _stream(
    resp: urllib3.BaseHTTPResponse,
    dest: Path,
    url: str,
    limits: FetchLimits,
    started: float,
    stop: Callable[[], bool],
    clock: Callable[[], float],
) -> int:
    size = 0
    try:
        with dest.open("wb") as f:
            for chunk in resp.stream(CHUNK_BYTES, decode_content=True):
                size += len(chunk)
                if size > limits.max_bytes:
                    raise FetchFailed(
                        f"{redacted(url)} is more than this job's limit of {limits.max_bytes} bytes",
                        errors.SOURCE_TOO_LARGE,
                        permanent=True,
                    )
                f.write(chunk)
                if stop():
                    raise FetchStopped(f"stopped fetching {redacted(url)}")
                if clock() - started > limits.max_seconds:
                    raise FetchFailed(
                        f"{redacted(url)} was not fetched in {limits.max_seconds:.0f} s (at {size} bytes)",
                        permanent=False,
                    )
    except urllib3.exceptions.HTTPError as exc:
        raise FetchFailed(
            f"fetching {redacted(url)} broke off at {size} bytes: {type(exc).__name__}: {exc}"[:500], permanent=False
        ) from exc
    if size == 0:
        raise FetchFailed(f"{redacted(url)} is empty", errors.UPLOAD_EMPTY, permanent=True)
    return size  # a body shorter than its Content-Length raised above (urllib3 enforces it)
