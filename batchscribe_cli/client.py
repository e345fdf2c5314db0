"""A small client for the Batchscribe HTTP API, used by the CLI and the end-to-end tests.

Against a deployed stack it signs every request with SigV4 (service `execute-api`) from the
standard AWS credential chain; against the local stack (a loopback URL) it sends the
`X-Batchscribe-Owner` header the local server maps to an identity instead.
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

import requests

from batchscribe import media_types

OWNER_HEADER = "X-Batchscribe-Owner"


@dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str
    details: Any = None

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"


def is_local(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def api_url_from_stack(stack_name: str = "Batchscribe", region: str | None = None) -> str:
    """The ApiUrl output of a deployed stack."""
    import boto3

    cfn = boto3.client("cloudformation", region_name=region)
    outputs = cfn.describe_stacks(StackName=stack_name)["Stacks"][0].get("Outputs", [])
    for out in outputs:
        if out["OutputKey"] == "ApiUrl":
            return str(out["OutputValue"])
    raise RuntimeError(f"stack {stack_name} has no ApiUrl output; is it a Batchscribe stack?")


class Client:
    def __init__(self, base_url: str, owner: str | None = None, timeout: float = 30) -> None:
        self.base = base_url.rstrip("/")
        self.owner = owner
        self.timeout = timeout
        self.session = requests.Session()
        self._signer: Any = None
        if not is_local(self.base):
            self._signer = self._make_signer()

    @staticmethod
    def _make_signer() -> Any:
        import boto3
        from botocore.auth import SigV4Auth

        session = boto3.Session()
        credentials = session.get_credentials()
        if credentials is None:
            raise RuntimeError(
                "no AWS credentials found: configure them (aws configure, AWS_PROFILE, ...) "
                "to call a deployed Batchscribe API"
            )
        return SigV4Auth(credentials.get_frozen_credentials(), "execute-api", session.region_name or "us-east-1")

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
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if self.owner and is_local(self.base):
            all_headers[OWNER_HEADER] = self.owner
        if self._signer is not None:
            from botocore.awsrequest import AWSRequest

            aws_request = AWSRequest(method=method, url=url, data=data, headers=all_headers)
            self._signer.add_auth(aws_request)
            all_headers = dict(aws_request.headers.items())
        resp = self.session.request(method, url, data=data, headers=all_headers, timeout=self.timeout)
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        if resp.status_code >= 400:
            err = (payload or {}).get("error", {}) if isinstance(payload, dict) else {}
            raise ApiError(
                resp.status_code,
                err.get("code", "http_error"),
                err.get("message", resp.text[:300] or resp.reason),
                err.get("details"),
            )
        return payload

    # ---- the API -------------------------------------------------------------------------

    def create_job(
        self,
        path: Path,
        options: dict[str, Any] | None = None,
        content_type: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        content_type = (
            content_type
            or media_types.guess(path.name)
            or mimetypes.guess_type(path.name)[0]
            or "application/octet-stream"
        )
        body = {"filename": path.name, "content_type": content_type, "size_bytes": path.stat().st_size}
        if options:
            body["options"] = options
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return dict(self.request("POST", "/jobs", body, headers=headers))

    def upload(self, ticket: dict[str, Any], path: Path) -> None:
        with path.open("rb") as f:
            resp = requests.post(
                ticket["url"], data=ticket["fields"], files={"file": (path.name, f)}, timeout=max(self.timeout, 600)
            )
        if resp.status_code not in (200, 201, 204):
            raise ApiError(resp.status_code, "upload_failed", f"the upload was refused: {resp.text[:300]}")

    def submit(self, path: Path, options: dict[str, Any] | None = None) -> dict[str, Any]:
        job = self.create_job(path, options)
        self.upload(job["upload"], path)
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/jobs/{job_id}"))

    def list(self, status: str | None = None, limit: int = 20, next_token: str | None = None) -> dict[str, Any]:
        return dict(self.request("GET", "/jobs", query={"status": status, "limit": limit, "next_token": next_token}))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/jobs/{job_id}/cancel"))

    def wait(
        self,
        job_id: str,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        poll: float = 0.5,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_update:
                on_update(job)
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout} s")
            time.sleep(poll)

    def result_text(self, job: dict[str, Any], fmt: str) -> str:
        urls = (job.get("result") or {}).get("urls", {})
        if fmt not in urls:
            raise ApiError(
                404, "format_not_available", f"this job has no {fmt} output (it produced: {', '.join(urls) or 'none'})"
            )
        resp = requests.get(urls[fmt], timeout=self.timeout)
        resp.raise_for_status()
        resp.encoding = "utf-8"
        return resp.text
