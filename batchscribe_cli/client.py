"""A small client for the Batchscribe HTTP API, used by the CLI and the end-to-end tests.

Against a deployed stack it signs every request with SigV4 (service `execute-api`), taking the
credential chain's *current* credentials for each request (botocore refreshes an expiring role,
SSO or instance session behind them); against the local stack (a loopback URL) it sends the
`X-Batchscribe-Owner` header the local server maps to an identity instead.

Transient failures (connection errors, 429 and 5xx answers) are retried by urllib3's `Retry`
mounted on the requests session, with exponential backoff and jitter, honouring `Retry-After`;
job creation carries an `Idempotency-Key`, so a retried create returns the same job. Polling a
job backs off exponentially (with jitter) while nothing changes.

It needs requests (with urllib3) and botocore, and from the core only `media_types` and `keys`
(plain Python): what `pip install batchscribe` brings; no boto3, no ML packages.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import random
import re
import string
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.util.retry import Retry

from batchscribe import media_types
from batchscribe.keys import is_job_id
from batchscribe.models import TERMINAL_STATUSES

OWNER_HEADER = "X-Batchscribe-Owner"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MIN_PREFIX = 6  # hex characters of a job id that `resolve` accepts as a prefix
PAGE_MAX = 100  # the API's largest page
MULTIPART_BYTES = 16 * 1024 * 1024  # larger files go up in parts: bounded memory, resumable
PRESIGN_SECONDS = 12 * 3600  # an s3:// input's URL: time for the job to wait in the queue and be fetched
_EXECUTE_API_HOST = re.compile(r"\.execute-api\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com(?:\.cn)?$")
_REGION_HINT = "pass --region, or set AWS_REGION (or AWS_DEFAULT_REGION), or `region` in your AWS profile"
_PROFILE_HINT = "check --profile / AWS_PROFILE against `aws configure list-profiles`"
_CREDENTIALS_HINT = "configure AWS credentials (`aws configure`, `aws sso login`, AWS_PROFILE=...) and run it again"


@dataclass
class ApiError(Exception):
    """The API (or the storage behind a presigned URL) answered with an error."""

    status: int
    code: str
    message: str
    details: Any = None

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"


class SetupError(Exception):
    """The client cannot call the API as configured: no AWS credentials or region, an unknown
    profile or stack. `hint` says what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadApiUrl(SetupError):
    """The API URL itself is malformed (no scheme, no host)."""


class WrongFile(Exception):
    """The file given to resume an upload is not the one the job's upload was started with:
    another size than the job declared, or parts S3 holds that differ from it. `hint` says
    what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class JobRefError(Exception):
    """A job id or prefix that names no job, or more than one, of the caller's jobs."""

    MALFORMED, NONE, AMBIGUOUS, UNCHECKED = "malformed", "none", "ambiguous", "unchecked"

    def __init__(self, message: str, hint: str | None = None, *, kind: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.kind = kind  # malformed; none matches; ambiguous; unchecked (one match, not all jobs read)


# ---- where, and as whom ----------------------------------------------------------------


def is_local(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def check_api_url(url: str) -> str:
    """The URL, if it has an http(s) scheme and a host; else BadApiUrl with the fix."""
    parsed = urlparse(url.strip())
    if parsed.scheme in ("http", "https") and parsed.hostname:
        return url.strip()
    bare = url.strip()
    if "://" not in bare:
        host = bare.split("/", 1)[0]
        scheme = "http" if is_local(f"http://{host}") else "https"
        raise BadApiUrl(
            f"the API URL {bare!r} has no scheme",
            f"write it in full: {scheme}://{bare} (`batchscribe local up` and the stack's ApiUrl output print it)",
        )
    raise BadApiUrl(f"the API URL {bare!r} is not an http:// or https:// URL", "check --api / BATCHSCRIBE_API")


def region_from_url(url: str) -> str | None:
    """The region of an API Gateway URL (https://ID.execute-api.REGION.amazonaws.com/...)."""
    match = _EXECUTE_API_HOST.search(urlparse(url).hostname or "")
    return match.group("region") if match else None


def aws_session(profile: str | None = None) -> Any:
    """A botocore session: the standard credential chain and config (AWS_PROFILE, env, SSO...)."""
    import botocore.session

    return botocore.session.Session(profile=profile)


def resolve_region(session: Any, explicit: str | None = None, url: str | None = None) -> str | None:
    """--region, else the region in an execute-api URL (the one the API signs for), else the
    usual AWS configuration: AWS_REGION, AWS_DEFAULT_REGION, the profile's `region`."""
    from botocore.exceptions import BotoCoreError

    if explicit:
        return explicit
    if url and (from_url := region_from_url(url)):
        return from_url
    if os.environ.get("AWS_REGION"):
        return os.environ["AWS_REGION"]
    try:
        region = session.get_config_variable("region")
    except BotoCoreError as exc:  # e.g. ProfileNotFound
        raise SetupError(f"cannot read the AWS configuration: {exc}", _PROFILE_HINT) from exc
    return str(region) if region else None


def deployed_region(folder: Path | None = None) -> str | None:
    """The region the deploy config in `folder`'s cdk.json (a Batchscribe checkout, the current
    folder by default) deploys to: where `cdk deploy` and `cdk destroy` put the stack."""
    path = (folder or Path.cwd()) / "cdk.json"
    try:
        region = json.loads(path.read_text())["context"]["batchscribe"]["region"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(region) if isinstance(region, str) and region else None


def api_url_from_stack(
    stack_name: str = "Batchscribe", region: str | None = None, profile: str | None = None, session: Any = None
) -> str:
    """The ApiUrl output of a deployed stack (AWS_ENDPOINT_URL and the profile are honoured),
    looked up in --region, else the usual AWS configuration's region, and then (or else) the
    region the deploy config in ./cdk.json deploys to."""
    session = session or aws_session(profile)
    candidates = [
        r for r in dict.fromkeys((resolve_region(session, region), None if region else deployed_region())) if r
    ]
    if not candidates:
        raise SetupError(f"no AWS region to look up the stack {stack_name!r} in", _REGION_HINT)
    for where in candidates:
        stack = _describe_stack(session, stack_name, where)
        if stack is None:
            continue
        for out in stack.get("Outputs", []):
            if out["OutputKey"] == "ApiUrl":
                return str(out["OutputValue"])
        raise SetupError(
            f"the stack {stack_name!r} has no ApiUrl output", "is it a Batchscribe stack? Or pass --api URL"
        )
    raise SetupError(
        f"there is no stack {stack_name!r} in {' or '.join(candidates)}",
        "check the name and the region it was deployed to (cdk.json's batchscribe.region; "
        "`aws cloudformation list-stacks --region REGION`), then pass --region, or pass --api URL",
    )


def _describe_stack(session: Any, stack_name: str, where: str) -> dict[str, Any] | None:
    """The stack in region `where`, or None when there is none by that name."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        cfn = session.create_client("cloudformation", region_name=where)
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except NoCredentialsError as exc:
        raise SetupError(f"no AWS credentials to look up the stack {stack_name!r}", _CREDENTIALS_HINT) from exc
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ValidationError":
            return None
        raise SetupError(
            f"cannot read the stack {stack_name!r} in {where}: {exc}",
            "your identity needs cloudformation:DescribeStacks; check it with `aws sts get-caller-identity`",
        ) from exc
    except BotoCoreError as exc:
        raise SetupError(f"cannot read the stack {stack_name!r} in {where}: {exc}", _CREDENTIALS_HINT) from exc
    return dict(stacks[0]) if stacks else None


@dataclass(frozen=True)
class S3Source:
    url: str  # presigned GET, with the caller's credentials
    size: int
    expires_in: int


def presign_s3(
    uri: str,
    expires_in: int = PRESIGN_SECONDS,
    region: str | None = None,
    profile: str | None = None,
    session: Any = None,
) -> S3Source:
    """`s3://bucket/key` as a presigned GET URL made with the caller's own credentials: S3
    checks that the caller may read it, and the deployment needs no access to the bucket.
    The object is looked at first (a missing object or a refusal is said now, not by a failed
    job later), and the URL signed for the bucket's own region. A URL signed with temporary
    credentials (a role, SSO) stops working when they expire, whatever `expires_in` says."""
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    match = re.fullmatch(r"s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>.+)", uri)
    if not match:
        raise SetupError(f"{uri!r} is not an s3://BUCKET/KEY URI", "write it as s3://my-bucket/path/to/file.mp3")
    bucket, key = match["bucket"], match["key"]
    session = session or aws_session(profile)
    where = resolve_region(session, region) or "us-east-1"
    config = Config(signature_version="s3v4", retries={"mode": "standard"})
    try:
        s3 = session.create_client("s3", region_name=where, config=config)
        try:
            head = s3.head_bucket(Bucket=bucket)
            home = head["ResponseMetadata"]["HTTPHeaders"].get("x-amz-bucket-region", where)
        except ClientError as exc:  # a 301 from another region still names the bucket's
            home = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
            if not home:
                raise
        if home != where:
            s3 = session.create_client("s3", region_name=home, config=config)
        size = int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
        url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in)
    except NoCredentialsError as exc:
        raise SetupError(f"no AWS credentials to read {uri}", _CREDENTIALS_HINT) from exc
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            raise SetupError(f"{uri} does not exist", "check the bucket and key (`aws s3 ls " + uri + "`)") from exc
        raise SetupError(
            f"cannot read {uri}: {exc}",
            "your identity needs s3:GetObject on it (and kms:Decrypt for a KMS-encrypted object); "
            "check it with `aws s3 ls " + uri + "`",
        ) from exc
    except BotoCoreError as exc:
        raise SetupError(f"cannot read {uri}: {exc}", _CREDENTIALS_HINT) from exc
    return S3Source(url=str(url), size=size, expires_in=expires_in)


class SigV4(AuthBase):
    """requests auth: SigV4-sign each request with the credentials as they are *now*.

    `credentials` is what botocore's `get_credentials()` returns; for a role, SSO or instance
    session that object refreshes itself, and `get_frozen_credentials()` hands out a consistent,
    current key set. Only the headers this client sets are signed (not the ones a proxy or
    CloudFront may rewrite, such as Accept-Encoding or Connection)."""

    SIGNED_HEADERS = ("content-type", "idempotency-key")

    def __init__(self, credentials: Any, region: str, service: str = "execute-api") -> None:
        self.credentials = credentials
        self.region = region
        self.service = service

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.exceptions import BotoCoreError

        try:
            frozen = self.credentials.get_frozen_credentials()
        except BotoCoreError as exc:
            raise SetupError(f"the AWS credentials could not be refreshed: {exc}", _CREDENTIALS_HINT) from exc
        headers = {k: v for k, v in r.headers.items() if k.lower() in self.SIGNED_HEADERS}
        signed = AWSRequest(method=r.method, url=r.url, data=r.body or b"", headers=headers)
        SigV4Auth(frozen, self.service, self.region).add_auth(signed)
        for key, value in signed.headers.items():
            r.headers[key] = value
        return r


# ---- polling ---------------------------------------------------------------------------


@dataclass
class Backoff:
    """Polling delays: exponential from `initial` to `cap`, with jitter (each delay is drawn
    from [d/2, d], so many clients do not poll in step). `reset()` when something changed, so a
    moving job is followed closely and an idle one costs few requests."""

    initial: float = 0.5
    cap: float = 5.0
    rng: random.Random = field(default_factory=random.Random)  # jitter only
    _current: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._current = self.initial

    def next_delay(self) -> float:
        delay = self._current
        self._current = min(self.cap, self._current * 2)
        return self.rng.uniform(delay / 2, delay)


def parse_time(value: str) -> datetime:
    """An API timestamp (ISO 8601, `Z`), as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---- the client ------------------------------------------------------------------------


class Client:
    def __init__(
        self,
        base_url: str,
        owner: str | None = None,
        timeout: float = 30,
        *,
        region: str | None = None,
        profile: str | None = None,
        aws: Any = None,
        retry: Retry | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """`aws`: a botocore session (default: the standard chain, with `profile` if given);
        `retry`: the urllib3 policy (default `Client.retry_policy()`)."""
        self.base = check_api_url(base_url).rstrip("/")
        self.owner = owner
        self.timeout = timeout
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311 (polling jitter, not a secret)
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry if retry is not None else self.retry_policy())
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.auth: SigV4 | None = None
        self.region: str | None = None
        if not is_local(self.base):
            self.auth = self._make_auth(aws or aws_session(profile), region)

    @staticmethod
    def retry_policy(attempts: int = 5) -> Retry:
        """Retry connection errors, 429 and 5xx with exponential backoff (0.25 s doubling, capped
        at 8 s, plus up to 0.5 s of jitter), honouring Retry-After. POST is retried too: job
        creation carries an Idempotency-Key, and a cancel is idempotent in effect."""
        return Retry(
            total=attempts,
            connect=3,
            read=2,
            status=attempts,
            other=0,
            backoff_factor=0.25,
            backoff_max=8,
            backoff_jitter=0.5,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "HEAD", "OPTIONS", "POST"}),
            respect_retry_after_header=True,
            raise_on_status=False,  # the last answer comes back, with the API's error body
        )

    def _make_auth(self, session: Any, region: str | None) -> SigV4:
        from botocore.exceptions import BotoCoreError

        self.region = resolve_region(session, region, self.base)
        if not self.region:
            raise SetupError(f"no AWS region for signing requests to {self.base}", _REGION_HINT)
        try:
            credentials = session.get_credentials()
        except BotoCoreError as exc:
            raise SetupError(f"cannot load AWS credentials: {exc}", _CREDENTIALS_HINT) from exc
        if credentials is None:
            raise SetupError(f"no AWS credentials found to sign requests to {self.base}", _CREDENTIALS_HINT)
        return SigV4(credentials, self.region)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        url = self.base + path
        if query:
            params = {k: v for k, v in query.items() if v is not None}
            if params:
                url += "?" + urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if self.owner and self.auth is None:
            all_headers[OWNER_HEADER] = self.owner
        resp = self.session.request(
            method, url, data=data, headers=all_headers, timeout=(5, self.timeout), auth=self.auth
        )
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        if resp.status_code >= 400:
            raise _api_error(resp, payload)
        return payload

    # ---- the API -------------------------------------------------------------------------

    def create_job(
        self,
        path: Path,
        options: dict[str, Any] | None = None,
        content_type: str | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        priority: str | None = None,
    ) -> dict[str, Any]:
        content_type = (
            content_type
            or media_types.guess(path.name)
            or sniff_file(path)
            or mimetypes.guess_type(path.name)[0]
            or "application/octet-stream"
        )
        body = {"filename": path.name, "content_type": content_type, "size_bytes": path.stat().st_size}
        return self._create(body, options, callback_url, priority, idempotency_key)

    def create_from_url(
        self,
        source_url: str,
        options: dict[str, Any] | None = None,
        size_bytes: int | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        priority: str | None = None,
    ) -> dict[str, Any]:
        """A job whose worker fetches `source_url` (https://; a presigned S3 URL for s3://, see
        `presign_s3`): queued at once, nothing to upload. `size_bytes`: the most to fetch."""
        body: dict[str, Any] = {"source_url": source_url}
        if size_bytes:
            body["size_bytes"] = size_bytes
        return self._create(body, options, callback_url, priority, idempotency_key)

    def _create(
        self,
        body: dict[str, Any],
        options: dict[str, Any] | None,
        callback_url: str | None,
        priority: str | None,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        """POST /jobs with the input's fields in `body` and the optional ones common to every
        job; a retried create (lost answer, 5xx) must not make a second job: one key per call."""
        optional = {"options": options, "callback_url": callback_url, "priority": priority}
        body = {**body, **{k: v for k, v in optional.items() if v}}
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return dict(self.request("POST", "/jobs", body, headers=headers))

    def upload(self, ticket: dict[str, Any], path: Path) -> None:
        with path.open("rb") as f:
            resp = self.session.post(
                ticket["url"],
                data=ticket["fields"],
                files={"file": (path.name, f)},
                timeout=(5, max(self.timeout, 600)),
            )
        if resp.status_code not in (200, 201, 204):
            raise ApiError(resp.status_code, "upload_failed", f"the upload was refused: {resp.text[:300]}")

    def resume_upload(
        self,
        job_id: str,
        path: Path,
        on_progress: Callable[[int, int], None] | None = None,
        restart: bool = False,
    ) -> dict[str, Any]:
        """Finish the upload of a pending job's file after an interruption (only the parts S3
        lacks go up), once the file is known to be the job's: its size is the one the job
        declared and each part S3 holds is the same bytes (WrongFile otherwise). `restart`:
        drop the parts S3 holds and send the whole file again. Returns the job as it was."""
        job = self.get(job_id)
        declared, size = int(job["input"]["size_bytes"]), path.stat().st_size
        if size != declared:
            raise WrongFile(
                f"wrong file: job {job_id[:8]} was created for {job['input']['filename']!r} ({declared:,} bytes); "
                f"{path.name!r} is {size:,} bytes",
                f"give the job's own file (batchscribe upload {job_id[:8]} FILE), or submit {path.name} as a new job",
            )
        if restart:
            self.request("POST", f"/jobs/{job_id}/multipart/abort")
        self.upload_parts(job_id, path, on_progress)
        return job

    def upload_parts(self, job_id: str, path: Path, on_progress: Callable[[int, int], None] | None = None) -> None:
        """Upload a pending job's file in parts, one part in memory at a time. Run again
        after an interruption, it sends only the parts S3 does not hold yet (WrongFile if
        those it holds are not this file's)."""
        size = path.stat().st_size
        ticket = self.request("POST", f"/jobs/{job_id}/multipart")
        check_held_parts(job_id, path, ticket)
        etags = {p["part_number"]: p["etag"] for p in ticket["uploaded"]}
        sent = sum(int(p.get("size") or 0) for p in ticket["uploaded"])
        if on_progress:
            on_progress(sent, size)
        with path.open("rb") as f:
            while ticket["parts"]:
                for part in ticket["parts"]:
                    number = part["part_number"]
                    f.seek((number - 1) * ticket["part_size"])
                    data = f.read(ticket["part_size"])
                    resp = self.session.put(part["url"], data=data, timeout=(5, max(self.timeout, 600)))
                    if resp.status_code != 200:
                        raise ApiError(
                            resp.status_code, "upload_failed", f"part {number} was refused: {resp.text[:300]}"
                        )
                    etags[number] = resp.headers["ETag"]
                    sent += len(data)
                    del data
                    if on_progress:
                        on_progress(sent, size)
                if len(etags) >= ticket["part_count"]:
                    break
                ticket = self.request("POST", f"/jobs/{job_id}/multipart")  # the next URLs
        parts = [{"part_number": n, "etag": etag} for n, etag in sorted(etags.items())]
        self.request("POST", f"/jobs/{job_id}/multipart/complete", {"parts": parts})

    def upload_file(
        self, job: dict[str, Any], path: Path, on_progress: Callable[[int, int], None] | None = None
    ) -> None:
        """A small file in one presigned POST; a large one (over MULTIPART_BYTES) in parts."""
        if path.stat().st_size > MULTIPART_BYTES or not job.get("upload"):
            self.upload_parts(job["job_id"], path, on_progress)
        else:
            self.upload(job["upload"], path)
            if on_progress:
                on_progress(path.stat().st_size, path.stat().st_size)

    def submit(
        self,
        path: Path,
        options: dict[str, Any] | None = None,
        callback_url: str | None = None,
        priority: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        on_created: Callable[[dict[str, Any]], None] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        job = self.create_job(path, options, content_type, callback_url=callback_url, priority=priority)
        if on_created:
            on_created(job)
        self.upload_file(job, path, on_progress)
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/jobs/{job_id}"))

    def models(self) -> dict[str, Any]:
        """{"models": [{name, pool, english_only, default_for, max_upload_bytes}], "default": name}"""
        return dict(self.request("GET", "/models"))

    def list(
        self, status: str | None = None, limit: int = 20, next_token: str | None = None, priority: str | None = None
    ) -> dict[str, Any]:
        """One page of the caller's jobs, newest first (the API's own paging)."""
        query = {"status": status, "priority": priority, "limit": limit, "next_token": next_token}
        return dict(self.request("GET", "/jobs", query=query))

    def iter_pages(
        self, status: str | None = None, next_token: str | None = None, page_size: int = PAGE_MAX
    ) -> Iterator[dict[str, Any]]:
        """Pages of the caller's jobs from `next_token` on, newest first, until the last."""
        while True:
            page = self.list(status=status, limit=page_size, next_token=next_token)
            yield page
            next_token = page.get("next_token")
            if not next_token:
                return

    def list_jobs(
        self,
        status: str | None = None,
        limit: int = 20,
        since: datetime | None = None,
        next_token: str | None = None,
        priority: str | None = None,
    ) -> dict[str, Any]:
        """Up to `limit` of the caller's jobs, newest first, created at or after `since`, from
        `next_token` on; reads as many pages as that takes and stops at the first older job.
        `next_token` in the answer continues the listing (None: nothing more)."""
        jobs: list[dict[str, Any]] = []
        token = next_token
        while len(jobs) < limit:
            page = self.list(status=status, limit=min(PAGE_MAX, limit - len(jobs)), next_token=token, priority=priority)
            for job in page["jobs"]:
                if since is not None and parse_time(job["created_at"]) < since:
                    return {"jobs": jobs, "next_token": None}  # newest first: the rest is older still
                jobs.append(job)
            token = page.get("next_token")
            if not token:
                break
        return {"jobs": jobs, "next_token": token}

    def resolve(self, ref: str, max_pages: int = 20) -> str:
        """A full job id from a full id or a unique prefix (≥ MIN_PREFIX hex characters) of one of
        the caller's jobs. JobRefError when it is malformed, matches none, or more than one."""
        cleaned = ref.strip().lower().replace("-", "")
        if is_job_id(cleaned):
            return cleaned
        if not (MIN_PREFIX <= len(cleaned) < 32 and all(c in string.hexdigits for c in cleaned)):
            raise JobRefError(
                f"{ref!r} is not a job id (32 hex characters, or a prefix of at least {MIN_PREFIX})",
                "`batchscribe list` shows your jobs' ids",
                kind=JobRefError.MALFORMED,
            )
        matches: list[str] = []
        complete = False
        for n, page in enumerate(self.iter_pages()):
            matches += [j["job_id"] for j in page["jobs"] if j["job_id"].startswith(cleaned)]
            if len(matches) > 1:
                shown = ", ".join(m[:12] + "…" for m in matches[:5])
                raise JobRefError(
                    f"{ref!r} matches more than one of your jobs ({shown})",
                    "give more of the id (`batchscribe list` shows them)",
                    kind=JobRefError.AMBIGUOUS,
                )
            if not page.get("next_token"):
                complete = True
                break
            if n + 1 >= max_pages:
                break
        if len(matches) == 1 and complete:
            return matches[0]
        checked = "" if complete else f" among your newest {max_pages * PAGE_MAX}"
        if matches:
            raise JobRefError(
                f"{ref!r} matches a job{checked}, but not all of your jobs could be checked",
                "give the full 32-character id",
                kind=JobRefError.UNCHECKED,
            )
        raise JobRefError(
            f"none of your jobs{checked} has an id starting with {cleaned}",
            "`batchscribe list` shows your jobs; jobs of other identities are not visible",
            kind=JobRefError.NONE,
        )

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/jobs/{job_id}/cancel"))

    def wait(
        self,
        job_id: str,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        poll: float = 0.5,
        timeout: float | None = None,
        max_poll: float = 5.0,
    ) -> dict[str, Any]:
        """Poll until the job ends: every `poll` s while it moves, backing off (with jitter) to
        `max_poll` s while status and progress stay the same."""
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = Backoff(poll, max_poll, self.rng)
        seen: tuple[str, int] | None = None
        while True:
            job = self.get(job_id)
            if on_update:
                on_update(job)
            if job["status"] in TERMINAL_STATUSES:
                return job
            now = (job["status"], job["progress"])
            if now != seen:
                seen = now
                backoff.reset()
            delay = backoff.next_delay()
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout} s")
                delay = min(delay, left)
            self.sleep(delay)

    def result_text(self, job: dict[str, Any], fmt: str) -> str:
        """A finished job's output in `fmt` (the job as the API answered it)."""
        return self.output_text((job.get("result") or {}).get("urls", {}), fmt)

    def output_text(self, urls: Mapping[str, str], fmt: str) -> str:
        """The output in `fmt` from a result's URLs (format -> presigned URL)."""
        if fmt not in urls:
            raise ApiError(
                404, "format_not_available", f"this job has no {fmt} output (it produced: {', '.join(urls) or 'none'})"
            )
        resp = self.session.get(urls[fmt], timeout=(5, self.timeout))
        if resp.status_code >= 400:
            raise ApiError(
                resp.status_code, "result_download_failed", f"the {fmt} result could not be downloaded ({resp.reason})"
            )
        resp.encoding = "utf-8"
        return resp.text


def sniff_file(path: Path) -> str | None:
    """The content type `path`'s first bytes show (a FLAC file without its extension...)."""
    try:
        with path.open("rb") as f:
            return media_types.sniff(f.read(media_types.SNIFF_BYTES))
    except OSError:
        return None


def check_held_parts(job_id: str, path: Path, ticket: Mapping[str, Any]) -> None:
    """WrongFile unless each part S3 holds for the upload is this file's: the size of that
    slice of it and, where the ETag is a part's MD5 (S3-managed encryption), the same bytes."""
    size, part_size = path.stat().st_size, int(ticket["part_size"])
    with path.open("rb") as f:
        for part in ticket["uploaded"]:
            number, etag = int(part["part_number"]), str(part["etag"]).strip('"')
            f.seek((number - 1) * part_size)
            data = f.read(part_size)
            same_size = part.get("size") is None or int(part["size"]) == len(data)
            same_bytes = (
                not re.fullmatch(r"[0-9a-f]{32}", etag) or hashlib.md5(data, usedforsecurity=False).hexdigest() == etag
            )
            if not (same_size and same_bytes) or (number - 1) * part_size >= size:
                raise WrongFile(
                    f"wrong file: part {number} of job {job_id[:8]}'s upload, which S3 holds already, "
                    f"is not the same as that part of {path.name}: the upload was begun with another file",
                    f"start the upload over with the right file: batchscribe upload {job_id[:8]} FILE --restart",
                )


def _api_error(resp: requests.Response, payload: Any) -> ApiError:
    """The API's error body ({"error": {code, message, details}}), or API Gateway's own
    ({"message": ...}, e.g. for a refused signature), as one ApiError."""
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        return ApiError(
            resp.status_code,
            str(err.get("code", "http_error")),
            str(err.get("message", resp.reason)),
            err.get("details"),
        )
    gateway = payload.get("message") or payload.get("Message") if isinstance(payload, dict) else None
    code = {401: "unauthorized", 403: "forbidden", 429: "throttled"}.get(resp.status_code, "http_error")
    text = str(gateway) if gateway else (resp.text[:300].strip() or resp.reason or "no message")
    return ApiError(resp.status_code, code, text)
