"""What the template does with a worker that cannot start (issue 21), and where its GPU's
compiled kernels live: Batch never retries a worker that exited before its first claim (its exit
code said why), an alarm counts the one line such a worker logs, and the GPU pool's workers keep
the driver's JIT cache in a host folder made for their user, mounted into each container."""

from __future__ import annotations

from typing import Any

import pytest

from batchscribe.resources import (
    CUDA_CACHE_HOST_DIR,
    CUDA_CACHE_MAX_BYTES,
    CUDA_CACHE_MOUNT,
    WORKER_CANNOT_START,
    WORKER_NOT_STARTED,
    WorkerExit,
)
from stacks.constructs.compute import WORKER_UID
from stacks.constructs.monitoring import NAMESPACE, WORKERS_NOT_STARTED
from tests.infrastructure.templates import ROOT, by_prefix, job_env, resolve, resources

pytestmark = pytest.mark.slow


def _job_definition(t: dict[str, Any], pool: str) -> dict[str, Any]:
    return dict(by_prefix(t, "AWS::Batch::JobDefinition", f"Compute{pool}JobDefinition")["Properties"])


def test_a_worker_that_cannot_start_is_never_retried(template_json: dict[str, Any]) -> None:
    """Spot reclaims are retried; a worker's start exits (69 preflight, 70 engine, 78 settings)
    end its Batch job FAILED with that code, before the catch-all says the same for anything else."""
    assert {int(c) for c in WORKER_CANNOT_START} == {69, 70, 78}
    for pool in ("Gpu", "Cpu"):
        on_exit = _job_definition(template_json, pool)["RetryStrategy"]["EvaluateOnExit"]
        assert on_exit[0] == {"Action": "RETRY", "OnStatusReason": "Host EC2*"}
        assert on_exit[1:-1] == [{"Action": "EXIT", "OnExitCode": str(int(c))} for c in WORKER_CANNOT_START]
        assert on_exit[-1] == {"Action": "EXIT", "OnReason": "*"}
        assert len(on_exit) <= 5  # Batch's limit


def test_gpu_workers_keep_the_jit_cache_on_the_host(template_json: dict[str, Any]) -> None:
    container = _job_definition(template_json, "Gpu")["ContainerProperties"]
    [volume] = container["Volumes"]
    assert volume["Host"]["SourcePath"] == CUDA_CACHE_HOST_DIR
    assert container["MountPoints"] == [
        {"SourceVolume": volume["Name"], "ContainerPath": CUDA_CACHE_MOUNT, "ReadOnly": False}
    ]
    env = job_env(template_json, "Gpu")
    assert (
        env["CUDA_CACHE_PATH"] == CUDA_CACHE_MOUNT and int(env["CUDA_CACHE_MAXSIZE"]) == CUDA_CACHE_MAX_BYTES == 4 << 30
    )
    # the host folder exists, for the worker's user only, before any container mounts it
    templates = resources(template_json, "AWS::EC2::LaunchTemplate")
    gpu_data = resolve(
        next(v for k, v in templates.items() if "Gpu" in k)["Properties"]["LaunchTemplateData"]["UserData"]
    )
    assert f"install -d -m 0700 -o {WORKER_UID} -g {WORKER_UID} {CUDA_CACHE_HOST_DIR}" in gpu_data
    # the CPU pool compiles nothing
    cpu = _job_definition(template_json, "Cpu")["ContainerProperties"]
    assert "Volumes" not in cpu and "CUDA_CACHE_PATH" not in job_env(template_json, "Cpu")
    cpu_data = resolve(
        next(v for k, v in templates.items() if "Cpu" in k)["Properties"]["LaunchTemplateData"]["UserData"]
    )
    assert CUDA_CACHE_HOST_DIR not in cpu_data


def test_an_alarm_counts_workers_that_could_not_start(template_json: dict[str, Any]) -> None:
    """A metric filter on the workers' log group counts the one line (its `event`); the alarm
    fires at the first such worker in 5 minutes, and names its runbook."""
    [log_filter] = resources(template_json, "AWS::Logs::MetricFilter").values()
    props = log_filter["Properties"]
    worker_logs = [k for k in resources(template_json, "AWS::Logs::LogGroup") if k.startswith("ComputeWorkerLogs")]
    assert props["LogGroupName"] == {"Ref": worker_logs[0]}
    assert props["FilterPattern"] == f'{{ $.event = "{WORKER_NOT_STARTED}" }}'
    assert props["MetricTransformations"] == [
        {"MetricNamespace": NAMESPACE, "MetricName": WORKERS_NOT_STARTED, "MetricValue": "1"}
    ]
    [alarm] = [
        a["Properties"]
        for a in resources(template_json, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["AlarmName"] == "Batchscribe-WorkersNotStarting"
    ]
    [stat] = [m["MetricStat"] for m in alarm["Metrics"]]
    assert (stat["Metric"], stat["Stat"], stat["Period"]) == (
        {"MetricName": WORKERS_NOT_STARTED, "Namespace": NAMESPACE},
        "Sum",
        300,
    )
    assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["TreatMissingData"]) == (
        "GreaterThanThreshold",
        0,
        "notBreaching",
    )
    assert "Runbook: docs/design.md 'GPU preflight'" in alarm["AlarmDescription"]
    assert all(f"({int(code)})" in alarm["AlarmDescription"] for code in (WorkerExit.ENGINE, WorkerExit.CONFIG))
    # the runbook it names is there, in the worker's section
    design = (ROOT / "docs" / "design.md").read_text()
    worker = design[design.index("\n## The worker\n") : design.index("\n## Design notes\n")]
    assert "\n### GPU preflight\n" in worker and "`WorkersNotStarting`" in worker
