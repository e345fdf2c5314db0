"""The web console on the local API's port: the built page at `/` (console/dist, committed, which
this package carries as `console_dist`: a link to it in a checkout, its files in a wheel), and
its config.json saying the API answers on the same origin with the local identity, so
nobody signs in. The page gets the Content-Security-Policy the deployed site sends (CloudFront:
stacks/constructs/console.py), with the local S3 (moto, another port of 127.0.0.1) in place of
AWS's endpoints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from batchscribe.resources import console_csp

DIST = Path(__file__).parent / "console_dist"  # package data (pyproject.toml): installed or checked out
LOCAL_CSP = console_csp(connect="http://127.0.0.1:*", media="http://127.0.0.1:*")  # moto's S3: another port
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


@dataclass(frozen=True)
class Page:
    status: int
    content_type: str
    body: bytes

    def headers(self) -> dict[str, str]:
        return {
            "Content-Type": self.content_type,
            "Content-Security-Policy": LOCAL_CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }


def config_json() -> bytes:
    """The local stack's console config: the API on the page's own origin, no sign-in."""
    return json.dumps({"api": "", "cognito": None}).encode()


def console_page(path: str, dist: Path = DIST) -> Page | None:
    """The console's file for a GET of `path`, or None when the path is not the console's (the
    API's routes). `/` is the page; a checkout without the built page says how to build it."""
    if path == "/config.json":
        return Page(200, "application/json", config_json())
    name = "index.html" if path in ("/", "/index.html") else path.lstrip("/")
    if name not in {"index.html", "app.js", "app.css"}:
        return None
    file = dist / name
    if not file.is_file():
        message = f"the console is not built: {file} is missing (cd console && npm ci && npm run build)"
        return Page(404, "text/plain; charset=utf-8", message.encode())
    return Page(200, _TYPES[file.suffix], file.read_bytes())
