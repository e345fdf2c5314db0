"""Runtime settings, read once from the environment and validated. A missing variable
fails at start with the variable's name, never later as a silent default."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TypeVar

from pydantic import BaseModel, Field, ValidationError

ENV_PREFIX = "BATCHSCRIBE_"
T = TypeVar("T", bound=BaseModel)


class ServiceSettings(BaseModel):
    """What the Lambdas need. The CDK stack sets these from one place (stacks/config.py)."""

    table_name: str
    bucket_name: str
    jobs_queue_url: str
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    upload_window_seconds: int = Field(default=3600, gt=0, description="how long a presigned POST is valid")
    result_url_seconds: int = Field(default=3600, gt=0, description="lifetime of presigned result URLs")
    job_retention_days: int = Field(default=30, gt=0)
    lease_seconds: int = Field(default=300, gt=0)
    # small jobs go to a CPU pool when a queue for it exists (0 bytes: never)
    small_jobs_queue_url: str | None = None
    small_job_max_bytes: int = Field(default=0, ge=0)
    scaler_function_name: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServiceSettings:
        return load(cls, environ)


def load(model: type[T], environ: dict[str, str] | None = None) -> T:
    env = os.environ if environ is None else environ
    values = {name: env[ENV_PREFIX + name.upper()] for name in model.model_fields if ENV_PREFIX + name.upper() in env}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        missing = [ENV_PREFIX + str(e["loc"][0]).upper() for e in exc.errors() if e["type"] == "missing"]
        if missing:
            raise RuntimeError(f"missing environment variable(s): {', '.join(missing)}") from exc
        raise


def to_env(settings: BaseModel) -> dict[str, str]:
    """The environment that reproduces these settings (for the stack and the local stack)."""
    return {ENV_PREFIX + k.upper(): str(v) for k, v in settings.model_dump().items() if v is not None}


@lru_cache(maxsize=1)
def service_settings() -> ServiceSettings:
    return ServiceSettings.from_env()
