"""The reduced chaos run (`make chaos` is the full one): jobs through the local stack while
AWS calls fail, stall or are reported failed after succeeding, messages are duplicated and
lost, workers are killed, stopped past their lease and terminated, cancels race completion
and the stack restarts. Every job must end in one consistent terminal state, none lost, none
committed twice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchscribe_cli.chaos import Chaos, build_parser
from batchscribe_cli.faults import PLAN_ENV

pytestmark = pytest.mark.slow


def test_the_reduced_chaos_run_ends_consistent(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["--jobs", "7", "--minutes", "3", "--seed", "7", "--workers", "2", "--restarts", "1", "--fault-every", "3"]
    )
    report = Chaos(args, tmp_path).run()
    print(report.table())
    assert report.submitted == 7
    assert report.ok, report.table()  # nothing stuck, lost, committed twice or inconsistent
    assert report.succeeded + sum(report.failed.values()) + report.cancelled == 7
    assert report.failed["invalid_media"] >= 1  # the poison file among them failed with its code
    assert sum(report.faults.values()) >= 10  # faults really were injected
    assert PLAN_ENV not in os.environ  # the run leaves no fault plan to later processes
