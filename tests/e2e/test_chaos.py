"""The reduced chaos run (`make chaos` is the full one): jobs through the local stack while
AWS calls fail, stall or are reported failed after succeeding, messages are duplicated and
lost, workers are killed, stopped past their lease and terminated, cancels race completion
and the stack restarts. Every job must end in one consistent terminal state, none lost, none
committed twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.chaos import Chaos, build_parser
from harness.faults import PLAN_ENV, FaultPlan, worker_env


@pytest.mark.slow
def test_the_reduced_chaos_run_ends_consistent(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["--jobs", "7", "--minutes", "2", "--seed", "7", "--workers", "2", "--restarts", "1", "--fault-every", "3"]
    )
    report = Chaos(args, tmp_path).run()
    print(report.table())
    assert report.submitted == 7
    assert report.ok, report.table()  # nothing stuck, lost, committed twice or inconsistent
    assert report.succeeded + sum(report.failed.values()) + report.cancelled == 7
    assert report.failed["invalid_media"] >= 1  # the poison file among them failed with its code
    assert sum(report.faults.values()) >= 10  # faults really were injected
    assert PLAN_ENV not in os.environ  # the run leaves no fault plan to later processes


def test_a_worker_started_with_worker_env_injects_the_plans_faults(tmp_path: Path) -> None:
    """The harness is in no wheel: a worker process finds it through the PYTHONPATH that
    worker_env writes, and its sitecustomize hooks every AWS client the worker makes."""
    plan = FaultPlan(error_rate=1.0, latency_rate=0.0, ambiguous_rate=0.0, seed=3)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(worker_env(plan, tmp_path / "faults"))
    probe = (
        "import json, sys; from batchscribe import aws; c = aws.client('sqs');"
        "print(json.dumps([getattr(aws.client, '_chaos', False), getattr(c, '_chaos_hooked', False),"
        " 'harness.faults' in sys.modules]))"
    )
    # run from an empty folder: only the environment can make harness importable
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )

    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, True, True]
    assert FaultPlan.from_env() is None  # this process got no plan


def test_without_a_plan_the_sitecustomize_installs_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(worker_env(FaultPlan(), tmp_path / "faults"))
    del env[PLAN_ENV]
    probe = "import sys; from batchscribe import aws; print(getattr(aws.client, '_chaos', False))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )

    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
