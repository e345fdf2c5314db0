"""The operator's questions in the synthesized template: a saved Logs Insights query for each
(on the log group of the function that writes its lines), and the dashboard section that shows
the same answers (the job metrics by dimension, the queries as log widgets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchscribe.outcomes import (
    JOB_ATTEMPTS_METRIC,
    JOB_ENDED_EVENT,
    JOBS_ENDED_METRIC,
    TIME_QUEUED_METRIC,
    TIME_RUNNING_METRIC,
    WEBHOOK_OUTCOMES_METRIC,
)
from stacks.constructs.insights import QUESTIONS
from tests.infrastructure.templates import resolve, resources


def _log_group_of(template_json: dict[str, Any], process: str) -> str:
    """The log group of the function that runs lambdas/<process>/handler.py."""
    [fn] = [
        r
        for r in resources(template_json, "AWS::Lambda::Function").values()
        if r["Properties"].get("Handler") == f"lambdas.{process}.handler.handler"
    ]
    return str(fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"])


def test_a_saved_query_answers_each_operator_question(template_json: dict[str, Any]) -> None:
    definitions = {
        d["Properties"]["Name"]: d["Properties"]
        for d in resources(template_json, "AWS::Logs::QueryDefinition").values()
    }
    assert set(definitions) == {f"Batchscribe/{q.name}" for q in QUESTIONS}
    assert {q.name for q in QUESTIONS} >= {
        "FailuresByKind",
        "AttemptsToSucceed",
        "LongestWaits",
        "ExpiredRecords",
        "WebhookOutcomes",
    }
    groups = {name: _log_group_of(template_json, name) for name in ("notify", "webhook")}
    for q in QUESTIONS:
        d = definitions[f"Batchscribe/{q.name}"]
        assert d["LogGroupNames"] == [{"Ref": groups[q.source]}], q.name
        text = d["QueryString"]
        for line in q.lines:  # every line of the question, as written (QueryString puts `fields` first)
            assert line in text, (q.name, line, text)
    failures = definitions["Batchscribe/FailuresByKind"]["QueryString"]
    assert f'event = "{JOB_ENDED_EVENT}" and status = "failed"' in failures
    assert "by error_code, pool, model" in failures


def test_the_dashboard_shows_the_same_answers(template_json: dict[str, Any]) -> None:
    [dashboard] = resources(template_json, "AWS::CloudWatch::Dashboard").values()
    body = json.loads(resolve(dashboard["Properties"]["DashboardBody"]))
    searches = [
        m[0]["expression"]
        for w in body["widgets"]
        if w["type"] == "metric"
        for m in w["properties"].get("metrics", [])
        if isinstance(m[0], dict) and "SEARCH(" in m[0].get("expression", "")
    ]
    for metric in (
        JOBS_ENDED_METRIC,
        JOB_ATTEMPTS_METRIC,
        TIME_QUEUED_METRIC,
        TIME_RUNNING_METRIC,
        WEBHOOK_OUTCOMES_METRIC,
    ):
        assert any(f'MetricName="{metric}"' in s for s in searches), metric
    failed = next(s for s in searches if f'MetricName="{JOBS_ENDED_METRIC}"' in s)
    assert "{Batchscribe,service,status,pool,model,error_code}" in failed and 'status="failed"' in failed
    logs = [w["properties"] for w in body["widgets"] if w["type"] == "log"]
    for q in QUESTIONS:
        [widget] = [p for p in logs if p["title"].startswith(f"{q.name}:")]
        assert all(line in widget["query"] for line in q.lines), q.name


def test_the_operations_page_lists_each_saved_query_with_what_it_answers() -> None:
    """docs/operations.md's "Operator statistics" has a row per saved query (and no query it lacks)."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = page.split("### Operator statistics", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip().strip("`") for line in section.splitlines() if line.startswith("| `")}
    assert rows == {q.name for q in QUESTIONS}
    assert "StatsPolicyArn" in section and "batchscribe stats" in section
