"""`batchscribe stats --since` reads a span as `batchscribe list --since` does (the CLI's one
parser), as whole hours back, within the window the counters keep."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from batchscribe.resources import STATS_DEFAULT_HOURS, STATS_DEFAULT_OLDEST, STATS_MAX_HOURS
from batchscribe_cli.cli import build_parser
from batchscribe_cli.stats import since_hours

NOW = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("span", "hours"),
    [("24h", 24), ("90m", 2), ("1.5h", 2), ("7d", 168), ("1w", 168), ("2026-12-06T12:30Z", 24), ("30s", 1)],
)
def test_a_span_or_a_date_is_whole_hours_back_rounded_up(span: str, hours: int) -> None:
    assert since_hours(span, NOW) == hours


@pytest.mark.parametrize("span", ["yesterday", "-2h", f"{STATS_MAX_HOURS + 1}h", "2027-01-01"])
def test_what_is_no_span_or_outside_the_kept_window_is_refused(span: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        since_hours(span, NOW)


def test_the_command_defaults_to_the_cores_window_and_count() -> None:
    args = build_parser().parse_args(["stats"])
    assert (args.since, args.oldest, args.json) == (STATS_DEFAULT_HOURS, STATS_DEFAULT_OLDEST, False)
    assert build_parser().parse_args(["stats", "--since", "7d", "--json"]).since == 168
