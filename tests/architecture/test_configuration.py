"""One typed config path: every process reads one settings model from the core, and the CDK
stack and the local stack write each process's environment from that same model. A
variable's name is typed once (a field of batchscribe/settings.py); every timing is defined
once, with its relations checked."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from batchscribe.resources import WorkerExit
from batchscribe.settings import (
    ENV_PREFIX,
    PROCESS_SETTINGS,
    ConfigError,
    EnvSettings,
    Timings,
    WorkerSettings,
)
from batchscribe_cli.local import IN_PROCESS, LocalConfig, LocalStack, merged_env
from batchscribe_cli.provision import Provisioned

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    p
    for top in ("batchscribe", "batchscribe_cli", "lambdas", "gpu_container", "stacks", "scripts", "bench", "harness")
    for p in (ROOT / top).rglob("*.py")
] + [ROOT / "app.py"]


def test_no_variable_name_is_typed_outside_the_settings_module() -> None:
    literal = re.compile(rf"['\"]{ENV_PREFIX}[A-Z_]+")
    offenders = [
        str(p.relative_to(ROOT))
        for p in SOURCES
        if p != ROOT / "batchscribe" / "settings.py" and literal.search(p.read_text())
    ]
    assert offenders == []


def test_every_variable_the_image_sets_is_a_worker_setting() -> None:
    dockerfile = (ROOT / "gpu_container" / "Dockerfile").read_text()
    names = set(re.findall(rf"\b({ENV_PREFIX}[A-Z_]+)=", dockerfile))
    assert names and names <= WorkerSettings.env_names(), names - WorkerSettings.env_names()


def _reads(path: Path) -> set[str]:
    """The settings models a module builds with `<Model>.from_env(...)`."""
    tree = ast.parse(path.read_text())
    return {
        node.func.value.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "from_env"
        and isinstance(node.func.value, ast.Name)
    }


@pytest.mark.parametrize("process", sorted(PROCESS_SETTINGS))
def test_each_process_reads_exactly_its_own_model(process: str) -> None:
    path = (
        ROOT / "gpu_container" / "worker" / "main.py"
        if process == "worker"
        else ROOT / "lambdas" / process / "handler.py"
    )
    assert _reads(path) == {PROCESS_SETTINGS[process].__name__}


def _provisioned() -> Provisioned:
    return Provisioned(
        table="t", bucket="b", jobs_queue_url="http://q/jobs", jobs_dlq_url="http://q/dlq",
        uploads_queue_url="http://q/up", uploads_dlq_url="http://q/up-dlq", webhooks_queue_url="http://q/hooks",
        class_queue_urls={"high": "http://q/jobs-high", "low": "http://q/jobs-low"},
        class_dlq_urls={"high": "http://q/jobs-high-dlq", "low": "http://q/jobs-low-dlq"},
    )  # fmt: skip


def test_the_local_stack_configures_each_process_from_its_model(tmp_path: Path) -> None:
    stack = LocalStack(LocalConfig(data_dir=tmp_path))
    settings = stack.process_settings(_provisioned())
    # every process, notify included: the table's stream runs the notify handler locally too
    assert set(settings) == set(PROCESS_SETTINGS)
    for process, model in settings.items():
        assert type(model) is PROCESS_SETTINGS[process]
    # the handlers share the local stack's process: one environment serves each of them
    env = merged_env(*(settings[p].to_env() for p in IN_PROCESS))
    for process in IN_PROCESS:
        assert PROCESS_SETTINGS[process].from_env(env) == settings[process]
    worker = settings["worker"]
    assert isinstance(worker, WorkerSettings) and worker.timings == stack.config.timings


def test_settings_round_trip_through_the_environment() -> None:
    worker = WorkerSettings(
        table_name="t", bucket_name="b", jobs_queue_url="q", timings=Timings.local(), allow_download=True
    )
    env = worker.to_env()
    assert all(k.startswith(ENV_PREFIX) for k in env)
    assert WorkerSettings.from_env(env) == worker


def test_a_missing_or_bad_variable_fails_at_start_naming_it() -> None:
    with pytest.raises(ConfigError, match="BATCHSCRIBE_JOBS_QUEUE_URL: missing"):
        WorkerSettings.from_env({"BATCHSCRIBE_TABLE_NAME": "t", "BATCHSCRIBE_BUCKET_NAME": "b"})
    with pytest.raises(ConfigError, match="BATCHSCRIBE_TIMINGS"):
        WorkerSettings.from_env(
            {
                "BATCHSCRIBE_TABLE_NAME": "t",
                "BATCHSCRIBE_BUCKET_NAME": "b",
                "BATCHSCRIBE_JOBS_QUEUE_URL": "q",
                "BATCHSCRIBE_TIMINGS": '{"lease_seconds": 500}',  # longer than the visibility
            }
        )


def test_a_worker_started_without_its_settings_says_so_in_one_line() -> None:
    """The container's entrypoint: a job definition missing a variable logs one line naming
    it (no traceback) and exits with EX_CONFIG (78); Batch retries only Spot reclaims."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    done = subprocess.run(
        [sys.executable, "-m", "gpu_container.worker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    out = (done.stdout + done.stderr).strip()
    assert done.returncode == WorkerExit.CONFIG, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    line = json.loads(out)
    assert line["level"] == "ERROR" and "BATCHSCRIBE_TABLE_NAME: missing" in line["error"]


def test_unknown_settings_are_refused() -> None:
    model: type[EnvSettings] = PROCESS_SETTINGS["api"]
    with pytest.raises(Exception, match="extra"):
        model(table_name="t", bucket_name="b", not_a_setting=1)  # type: ignore[call-arg]


# ---- timings ---------------------------------------------------------------------------------


def test_the_default_and_local_timings_hold_their_relations() -> None:
    for t in (Timings(), Timings.local()):
        assert 2 * t.heartbeat_seconds <= t.lease_seconds < t.visibility_seconds
        assert t.poll_seconds < t.idle_exit_seconds
        assert t.uploads_visibility_seconds >= 6 * t.intake_timeout_seconds
        assert t.dlq_visibility_seconds >= 6 * t.dead_letter_timeout_seconds


@pytest.mark.parametrize(
    ("change", "relation"),
    [
        ({"lease_seconds": 120}, "lease_seconds < visibility_seconds"),
        ({"heartbeat_seconds": 60}, "two heartbeats must fit in a lease"),
        ({"poll_seconds": 20, "idle_exit_seconds": 20}, "poll_seconds < idle_exit_seconds"),
        ({"intake_timeout_seconds": 120}, "uploads_visibility_seconds >= 6 x intake_timeout_seconds"),
        ({"dead_letter_timeout_seconds": 90}, "dlq_visibility_seconds >= 6 x dead_letter_timeout_seconds"),
    ],
)
def test_timings_that_break_a_relation_are_refused(change: dict[str, float], relation: str) -> None:
    with pytest.raises(ValueError, match=re.escape(relation)):
        Timings().replace(**change)


def test_the_deployment_config_checks_its_timings_and_attempts() -> None:
    from stacks.config import DeploymentConfig

    with pytest.raises(ValueError, match="lease_seconds < visibility_seconds"):
        DeploymentConfig.from_context({"timings": {"lease_seconds": 600}})
    with pytest.raises(ValueError, match="maxReceiveCount"):
        DeploymentConfig.from_context({"max_attempts": 9})
    with pytest.raises(ValueError, match="longer than the upload window"):
        DeploymentConfig.from_context({"upload_retention_days": 1, "timings": {"upload_window_seconds": 86400}})
    assert DeploymentConfig.from_context({"timings": {"idle_exit_seconds": 300}}).timings.idle_exit_seconds == 300
