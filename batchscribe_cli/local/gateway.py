"""The API Gateway stand-in: an HTTP server on 127.0.0.1 that turns each request into the REST
proxy event API Gateway would deliver and calls the real API handler with it. Header
`X-Batchscribe-Owner` stands in for the IAM caller; a CORS preflight gets what API Gateway's
mock integration answers when deployed."""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from batchscribe.resources import CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS, cors_headers
from batchscribe_cli.client import OWNER_HEADER
from batchscribe_cli.local.callers import Callers
from batchscribe_cli.local.console import console_page
from batchscribe_cli.local.handlers import Handler
from batchscribe_cli.local.lambda_events import LocalContext, owner_arn, proxy_event

_OWNER = re.compile(r"^[A-Za-z0-9_.@+=-]{1,64}$")


class ApiGateway(ThreadingHTTPServer):
    """The local API's HTTP server. Its listen backlog is sized for bursts (API Gateway takes
    hundreds of connections at once); socketserver's default of 5 resets clients when fifty
    connect together, as a parallel upload script or the rate-limit test does."""

    request_queue_size = 256
    daemon_threads = True

    def __init__(self, port: int, api: Handler, cors_origins: list[str], callers: Callers | None = None) -> None:
        self.api = api
        self.cors_origins = cors_origins
        self.callers = callers  # API Gateway's IAM check of each caller (None: every caller may call)
        super().__init__(("127.0.0.1", port), _Request)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Request(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "batchscribe-local"
    server: ApiGateway

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _handle(self) -> None:
        # the body is read even when the request is refused: the connection serves the next one
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else None
        owner = self.headers.get(OWNER_HEADER) or "local"
        if not _OWNER.match(owner):
            message = f"{OWNER_HEADER} must be 1-64 letters, digits or _.@+=-"
            self._send(400, {"error": {"code": "invalid_owner", "message": message}})
            return
        callers = self.server.callers
        denial = callers.denial(owner, self.command, urlsplit(self.path).path) if callers is not None else None
        if denial is not None:  # what API Gateway's ACCESS_DENIED gateway response says
            self._send(403, {"error": {"code": "forbidden", "message": denial}})
            return
        try:
            resp = self.server.api(self._event(owner, body), LocalContext())
        except Exception as exc:
            self._send(502, {"error": {"code": "internal_error", "message": str(exc)}})
            return
        # API Gateway answers with both header forms merged (Powertools puts Content-Type
        # in multiValueHeaders only)
        headers = {k: ",".join(v) for k, v in (resp.get("multiValueHeaders") or {}).items()}
        self._send(resp["statusCode"], resp.get("body") or "", {**headers, **(resp.get("headers") or {})})

    def _event(self, owner: str, body: str | None) -> dict[str, Any]:
        split = urlsplit(self.path)
        return proxy_event(
            self.command,
            split.path,
            user_arn=owner_arn(owner),
            caller=owner,
            body=body,
            headers=dict(self.headers.items()),
            query=parse_qs(split.query, keep_blank_values=True),  # as API Gateway passes `?status=`
            source_ip=self.client_address[0],
        )

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        for k, v in (headers or {"Content-Type": "application/json"}).items():
            if k.lower() not in ("content-length", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        """The web console's files at `/` (batchscribe_cli/local/console.py); the API otherwise."""
        page = console_page(urlsplit(self.path).path)
        if page is None:
            self._handle()
        else:
            self._send(page.status, page.body.decode(), page.headers())

    def do_OPTIONS(self) -> None:
        """A CORS preflight: what API Gateway's mock integration answers when deployed."""
        headers = cors_headers(self.headers.get("Origin"), self.server.cors_origins)
        if headers:
            headers["Access-Control-Allow-Methods"] = ",".join(CORS_ALLOW_METHODS)
            headers["Access-Control-Allow-Headers"] = ",".join(CORS_ALLOW_HEADERS)
        self._send(204, "", headers)

    do_POST = do_DELETE = do_PUT = _handle
