"""`batchscribe stats [--since 24h] [--json]`: the operator's statistics (GET /admin/stats) as
tables, or the route's JSON for scripts. The caller needs the stats policy (the stack's output
StatsPolicyArn); the local stack grants it to its own identity (`local`)."""

from __future__ import annotations

import argparse
import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from batchscribe.resources import (
    ADMIN_STATS_PATH,
    STATS_DEFAULT_HOURS,
    STATS_DEFAULT_OLDEST,
    STATS_MAX_HOURS,
    STATS_MAX_OLDEST,
)

if TYPE_CHECKING:
    from batchscribe_cli.client import Client
FORBIDDEN_HINT = (
    "the statistics route needs the stats policy: attach the stack's output StatsPolicyArn to your role, "
    "user or group (the invoke policy does not cover it)"
)


def since_hours(value: str, now: datetime | None = None) -> int:
    """`24h`, `90m`, `7d`, `1w` or a date (what `batchscribe list --since` takes) -> the whole
    hours back to it (rounded up; counts are kept per hour)."""
    from batchscribe_cli.cli import UsageError, parse_since  # the CLI's one reading of a span

    now = now or datetime.now(UTC)
    try:
        start = parse_since(value, now)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (e.g. 24h, 90m, 7d, 1w)") from None
    hours = math.ceil((now - start).total_seconds() / 3600)
    if not 1 <= hours <= STATS_MAX_HOURS:
        raise argparse.ArgumentTypeError(f"{value!r}: the window is 1 hour to {STATS_MAX_HOURS // 24} days")
    return hours


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--since",
        type=since_hours,
        default=STATS_DEFAULT_HOURS,
        metavar="SPAN",
        help=f"the window: {STATS_DEFAULT_HOURS}h (default), 90m, 7d, 1w or a date",
    )
    p.add_argument(
        "--oldest",
        type=int,
        default=STATS_DEFAULT_OLDEST,
        choices=range(1, STATS_MAX_OLDEST + 1),
        metavar="N",
        help=f"waiting jobs shown (default {STATS_DEFAULT_OLDEST}, at most {STATS_MAX_OLDEST})",
    )
    p.add_argument("--json", action="store_true", help="the route's JSON (for scripts)")


def fetch(client: Client, hours: int, oldest: int) -> dict[str, Any]:
    from batchscribe_cli.client import ApiError, SetupError  # the CLI's parser loads without requests

    try:
        return dict(client.request("GET", ADMIN_STATS_PATH, query={"hours": hours, "oldest": oldest}))
    except ApiError as exc:
        if exc.status == 403:
            raise SetupError(f"not allowed: {exc}", FORBIDDEN_HINT) from None
        raise


def render(report: dict[str, Any]) -> str:
    """The report as plain-text tables."""
    ended = ", ".join(f"{n} {status}" for status, n in report["ended"].items()) or "none"
    out = [f"jobs ended since {report['since']} ({report['hours']} h): {ended}", ""]
    out += _table(
        "Failures by error code, pool and model",
        ("code", "pool", "model", "jobs"),
        [(f["code"], f["pool"], f["model"], f["jobs"]) for f in report["failures"]],
    )
    out += _table(
        "Attempts to succeed by pool and model",
        ("pool", "model", "jobs", "mean", "attempts: jobs"),
        [
            (
                a["pool"],
                a["model"],
                a["jobs"],
                f"{a['mean']:.2f}",
                " ".join(f"{k}:{v}" for k, v in a["distribution"].items()),
            )
            for a in report["attempts_to_succeed"]
        ],
    )
    more = f" (of the first {report['queued_read']} read; more are queued)" if report["queued_more"] else ""
    out += _table(
        f"Oldest waiting jobs{more}",
        ("job", "class", "pool", "attempt", "waiting"),
        [
            (w["job_id"], w["priority"], w["pool"], w["attempt"], _duration(w["waiting_seconds"]))
            for w in report["oldest_waiting"]
        ],
    )
    out.append(f"job records expiring in the next 24 h: {report['expiring_next_day']}")
    return "\n".join(out)


def _table(title: str, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    if not rows:
        return [f"{title}: none", ""]
    cells = [header, *[tuple(str(c) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return [title, *lines[:1], "  ".join("-" * w for w in widths), *lines[1:], ""]


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def run(client: Client, args: argparse.Namespace) -> int:
    report = fetch(client, args.since, args.oldest)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0
