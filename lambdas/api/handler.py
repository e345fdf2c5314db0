"""The HTTP API: routes parse and validate, call one JobApi method, and map the
answer (or a domain error) to a response. The caller's identity comes from the request
context that API Gateway's IAM authorizer filled in, never from a header."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from batchscribe import aws, errors
from batchscribe.api_models import (
    CreateJobRequest,
    CreateJobResponse,
    ErrorBody,
    ErrorResponse,
    JobList,
    JobView,
)
from batchscribe.jobs import JobApi
from batchscribe.models import JobStatus
from batchscribe.resources import cors_headers
from batchscribe.settings import METRICS_NAMESPACE, ApiSettings

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")
metrics = Metrics(namespace=METRICS_NAMESPACE, service="api")

app = APIGatewayRestResolver(enable_validation=True)

# One table: domain error class -> HTTP status. Most specific classes first.
STATUS_BY_ERROR: tuple[tuple[type[errors.BatchscribeError], HTTPStatus], ...] = (
    (errors.JobNotFound, HTTPStatus.NOT_FOUND),
    (errors.IdempotencyConflict, HTTPStatus.CONFLICT),
    (errors.InvalidTransition, HTTPStatus.CONFLICT),
    (errors.JobAlreadyExists, HTTPStatus.CONFLICT),
    (errors.PayloadTooLarge, HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    (errors.UnsupportedMediaType, HTTPStatus.UNSUPPORTED_MEDIA_TYPE),
    (errors.BadRequest, HTTPStatus.BAD_REQUEST),
)

ERROR_RESPONSES: dict[int, Any] = {
    int(status): {
        "description": status.phrase,
        "content": {"application/json": {"model": ErrorResponse}},
    }
    for status in (
        HTTPStatus.BAD_REQUEST,
        HTTPStatus.NOT_FOUND,
        HTTPStatus.CONFLICT,
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    )
}


@aws.per_process
def jobs() -> JobApi:
    return JobApi.from_settings(ApiSettings.from_env())


def caller() -> str:
    """The IAM principal API Gateway authenticated (the local stack fills in the same field)."""
    identity = app.current_event.request_context.identity
    owner = identity.user_arn or identity.caller
    if not owner:
        # IAM auth is on every method, so this only happens if the API is misconfigured.
        raise errors.BatchscribeError("request has no caller identity", code="no_identity")
    return owner


def _error(status: HTTPStatus, code: str, message: str, details: Any = None) -> Response[Any]:
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details))
    return Response(
        status_code=int(status),
        content_type=content_types.APPLICATION_JSON,
        body=body.model_dump_json(exclude_none=True),
    )


@app.exception_handler(errors.BatchscribeError)
def _domain_error(exc: errors.BatchscribeError) -> Response[Any]:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return _error(status, exc.code, exc.message, exc.details)
    logger.exception("unmapped domain error")
    return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "internal error; the request id is logged")


@app.exception_handler(RequestValidationError)
def _invalid(exc: RequestValidationError) -> Response[Any]:
    details = [
        {
            "field": ".".join(str(part) for part in err["loc"] if part != "body") or "body",
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors()
    ]
    return _error(HTTPStatus.BAD_REQUEST, "invalid_request", "the request is not valid; see details", details)


@app.not_found
def _not_found(_: NotFoundError) -> Response[Any]:
    return _error(
        HTTPStatus.NOT_FOUND,
        "route_not_found",
        f"no route {app.current_event.http_method} {app.current_event.path}",
    )


@app.post(
    "/jobs",
    responses={
        201: {"description": "Job created", "content": {"application/json": {"model": CreateJobResponse}}},
        **ERROR_RESPONSES,
    },
    summary="Create a job and get an upload URL",
)
def create_job(body: CreateJobRequest) -> Response[Any]:
    idempotency_key = app.current_event.headers.get("Idempotency-Key")
    job, created = jobs().create_job(caller(), body, idempotency_key)
    metrics.add_metric(name="JobsCreated", unit="Count", value=1 if created else 0)
    return Response(
        status_code=HTTPStatus.CREATED,
        content_type=content_types.APPLICATION_JSON,
        body=job.model_dump_json(),
        headers={"Idempotent-Replayed": "false" if created else "true"},
    )


@app.get("/jobs/<job_id>", responses=ERROR_RESPONSES, summary="A job's status, progress and result URLs")
def get_job(job_id: Annotated[str, Path(max_length=64)]) -> JobView:
    return jobs().get_job(caller(), job_id)


@app.get("/jobs", responses=ERROR_RESPONSES, summary="The caller's jobs, newest first")
def list_jobs(
    status: Annotated[JobStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    next_token: Annotated[str | None, Query(max_length=2048)] = None,
) -> JobList:
    return jobs().list_jobs(caller(), status, limit, next_token)


@app.post("/jobs/<job_id>/cancel", responses=ERROR_RESPONSES, summary="Cancel a job that has not finished")
def cancel_job(job_id: Annotated[str, Path(max_length=64)]) -> JobView:
    return jobs().cancel_job(caller(), job_id)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = app.resolve(event, context)
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    cors = cors_headers(headers.get("origin"), jobs().settings.cors_origins)
    if cors:
        response.setdefault("headers", {}).update(cors)
        for name, value in cors.items():  # the proxy integration reads either form
            response.setdefault("multiValueHeaders", {})[name] = [value]
    return response


def openapi_json() -> str:
    return app.get_openapi_json_schema(
        title="Batchscribe API",
        version="1.0.0",
        description="Asynchronous Whisper transcription. Every route is signed with SigV4 (IAM).",
    )
