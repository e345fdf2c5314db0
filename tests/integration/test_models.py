"""Model routing honours the job: a job may name only a model the deployment serves (400
`unsupported_model` naming the choices otherwise), `GET /models` lists them, and a small
upload asking for a model the CPU pool does not serve goes to the GPU pool."""

from __future__ import annotations

import pytest

from batchscribe.models import JobMessage
from batchscribe.settings import ApiSettings, IntakeSettings
from tests.conftest import Stack, reset_caches
from tests.helpers import call, create, deliver_uploads, post_upload, receive_all

GPU_MODEL, CPU_MODEL = "large-v3-turbo", "small.en"


@pytest.fixture
def two_pools(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> str:
    """The API and the intake configured as a deployment with a CPU pool for uploads up to
    5000 bytes; returns the CPU pool's queue URL."""
    import boto3

    small_url = boto3.client("sqs").create_queue(QueueName=f"{aws_stack.table}-small")["QueueUrl"]
    for name, value in {
        ApiSettings.env_name("default_model"): GPU_MODEL,
        ApiSettings.env_name("small_job_model"): CPU_MODEL,
        ApiSettings.env_name("small_job_max_bytes"): "5000",
        IntakeSettings.env_name("small_jobs_queue_url"): small_url,
    }.items():
        monkeypatch.setenv(name, value)
    reset_caches()
    return str(small_url)


def test_models_lists_each_pools_model(two_pools: str) -> None:
    status, offered = call("GET", "/models")
    assert status == 200
    assert offered["default"] == GPU_MODEL
    assert [(m["name"], m["pool"], m["english_only"]) for m in offered["models"]] == [
        (GPU_MODEL, "gpu", False),
        (CPU_MODEL, "cpu", True),
    ]
    assert offered["models"][1]["max_upload_bytes"] == 5000


def test_a_model_not_served_is_400_naming_the_choices(two_pools: str) -> None:
    status, resp = call("POST", "/jobs", {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 10,
                                          "options": {"model": "large-v2"}})  # fmt: skip
    assert (status, resp["error"]["code"]) == (400, "unsupported_model")
    assert resp["error"]["details"] == {"field": "options.model", "supported": [GPU_MODEL, CPU_MODEL]}
    assert "GET /models" in resp["error"]["message"]
    for model in (GPU_MODEL, CPU_MODEL):
        assert create(options={"model": model})["options"]["model"] == model


def test_without_a_model_list_any_model_is_taken(aws_stack: Stack) -> None:
    """A deployment that does not say what it serves (no default_model) lists nothing and
    leaves the choice to its workers."""
    assert call("GET", "/models") == (200, {"models": [], "default": None})
    assert create(options={"model": "medium"})["options"]["model"] == "medium"


@pytest.mark.parametrize(
    ("size", "model", "pool"),
    [
        (1000, None, "cpu"),  # small, no model named: the CPU pool and its model
        (1000, CPU_MODEL, "cpu"),
        (1000, GPU_MODEL, "gpu"),  # small, but asks for the GPU pool's model
        (9000, None, "gpu"),
        (9000, GPU_MODEL, "gpu"),
    ],
)
def test_a_small_upload_goes_to_the_pool_that_serves_its_model(
    aws_stack: Stack, two_pools: str, size: int, model: str | None, pool: str
) -> None:
    job = create(size=size, options={"model": model} if model else None)
    post_upload(job["upload"], b"\0" * size)
    deliver_uploads(aws_stack)
    cpu = [JobMessage.model_validate_json(m["Body"]).job_id for m in receive_all(two_pools)]
    gpu = [JobMessage.model_validate_json(m["Body"]).job_id for m in receive_all(aws_stack.jobs_queue_url)]
    assert (cpu, gpu) == (([job["job_id"]], []) if pool == "cpu" else ([], [job["job_id"]]))
