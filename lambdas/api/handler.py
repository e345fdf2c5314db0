"""The HTTP API: routes parse and validate, call one JobApi method, and map the
answer (or a domain error) to a response. The caller's identity comes from the request
context that API Gateway's IAM authorizer filled in, never from a header."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.models import APIKey
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from batchscribe import aws, errors
from batchscribe.api_models import (
    CompleteMultipartRequest,
    CreateJobRequest,
    CreateJobResponse,
    ErrorBody,
    ErrorResponse,
    InputUrl,
    JobList,
    JobView,
    ModelList,
    MultipartTicket,
)
from batchscribe.identity import owner_of
from batchscribe.jobs import JobApi
from batchscribe.models import JobStatus, Priority
from batchscribe.outcomes import Dimensions
from batchscribe.resources import (
    ADMIN_STATS_PATH,
    STATS_DEFAULT_HOURS,
    STATS_DEFAULT_OLDEST,
    STATS_MAX_HOURS,
    STATS_MAX_OLDEST,
    cors_headers,
)
from batchscribe.settings import METRICS_NAMESPACE, ApiSettings
from batchscribe.stats import OperatorStats, StatsReport

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")
metrics = Metrics(namespace=METRICS_NAMESPACE, service="api")

app = APIGatewayRestResolver(enable_validation=True)

# One table: domain error class -> HTTP status. Most specific classes first.
STATUS_BY_ERROR: tuple[tuple[type[errors.BatchscribeError], HTTPStatus], ...] = (
    (errors.Unauthenticated, HTTPStatus.UNAUTHORIZED),
    (errors.Forbidden, HTTPStatus.FORBIDDEN),
    (errors.RateLimited, HTTPStatus.TOO_MANY_REQUESTS),
    (errors.JobNotFound, HTTPStatus.NOT_FOUND),
    (errors.IdempotencyConflict, HTTPStatus.CONFLICT),
    (errors.InvalidTransition, HTTPStatus.CONFLICT),
    (errors.JobAlreadyExists, HTTPStatus.CONFLICT),
    (errors.PayloadTooLarge, HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    (errors.UnsupportedMediaType, HTTPStatus.UNSUPPORTED_MEDIA_TYPE),
    (errors.BadRequest, HTTPStatus.BAD_REQUEST),
)


# Answered by API Gateway itself, before the function, in the same error shape (stacks/
# constructs/api.py: gateway responses): a missing or invalid SigV4 signature, throttling.
GATEWAY_ERRORS = {
    HTTPStatus.FORBIDDEN: "the request is not signed (`route_not_found`, as API Gateway answers an unsigned request), "
    "its signature is invalid or expired (`invalid_signature`, `expired_token`), or its principal may not call the "
    "API (`forbidden`); from POST /jobs also `priority_not_allowed` (the caller may not create `high` jobs)",
    HTTPStatus.TOO_MANY_REQUESTS: "throttled: over the stage's rate or burst limit; retry with backoff; from POST "
    "/jobs also `rate_limited` (over the caller's create rate limit): retry after the `Retry-After` seconds",
}


def responses(ok: tuple[HTTPStatus, type[Any]], *errors_: HTTPStatus) -> dict[int, Any]:
    """A route's documented answers: its success model, and the errors it can return, all in
    the one error shape: 400 and 401 (no caller identity) from every route, the gateway's own
    403 and 429, and the route's own."""
    status, model = ok
    out: dict[int, Any] = {
        int(status): {"description": status.phrase, "content": {"application/json": {"model": model}}}
    }
    error = {"application/json": {"model": ErrorResponse}}
    for status in (HTTPStatus.BAD_REQUEST, HTTPStatus.UNAUTHORIZED, *errors_):
        out[int(status)] = {"description": status.phrase, "content": error}
    for status, description in GATEWAY_ERRORS.items():
        out[int(status)] = {"description": description, "content": error}
    return out


@aws.per_process
def jobs() -> JobApi:
    return JobApi.from_settings(ApiSettings.from_env())


def caller() -> str:
    """The owner: from the IAM principal API Gateway authenticated (the local stack fills in
    the same field); never made up (batchscribe.identity)."""
    identity = app.current_event.request_context.identity
    return owner_of(identity.user_arn, identity.cognito_identity_id)


def _error(
    status: HTTPStatus, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response[Any]:
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details))
    return Response(
        status_code=int(status),
        content_type=content_types.APPLICATION_JSON,
        body=body.model_dump_json(exclude_none=True),
        headers=headers,
    )


@app.exception_handler(errors.BatchscribeError)
def _domain_error(exc: errors.BatchscribeError) -> Response[Any]:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, errors.RateLimited) else None
            return _error(status, exc.code, exc.message, exc.details, headers)
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
    responses=responses(
        (HTTPStatus.CREATED, CreateJobResponse),
        HTTPStatus.CONFLICT,
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    ),
    summary="Create a job and get an upload URL",
)
def create_job(
    body: CreateJobRequest,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="1 to 255 characters (else 400 `invalid_idempotency_key`): a retried create with the "
            "same key and body returns the same job for 24 h; the same key with another body is 409",
        ),
    ] = None,
) -> Response[Any]:
    job, created = jobs().create_job(caller(), body, idempotency_key)
    metrics.add_metric(name="JobsCreated", unit="Count", value=1 if created else 0)
    return Response(
        status_code=HTTPStatus.CREATED,
        content_type=content_types.APPLICATION_JSON,
        body=job.model_dump_json(),
        headers={"Idempotent-Replayed": "false" if created else "true"},
    )


@app.get(
    "/jobs/<job_id>",
    responses=responses((HTTPStatus.OK, JobView), HTTPStatus.NOT_FOUND),
    summary="A job's status, progress and result URLs",
)
def get_job(job_id: Annotated[str, Path(max_length=64)]) -> JobView:
    return jobs().get_job(caller(), job_id)


@app.get("/jobs", responses=responses((HTTPStatus.OK, JobList)), summary="The caller's jobs, newest first")
def list_jobs(
    status: Annotated[JobStatus | None, Query()] = None,
    priority: Annotated[Priority | None, Query(description="only jobs of this priority class")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    next_token: Annotated[str | None, Query(max_length=2048)] = None,
) -> JobList:
    return jobs().list_jobs(caller(), status, limit, next_token, priority)


@app.get(
    "/jobs/<job_id>/input",
    responses=responses((HTTPStatus.OK, InputUrl), HTTPStatus.NOT_FOUND),
    summary="A presigned GET of the job's uploaded file (the console's audio player)",
)
def get_input(job_id: Annotated[str, Path(max_length=64)]) -> InputUrl:
    return jobs().input_url(caller(), job_id)


@app.post(
    "/jobs/<job_id>/cancel",
    responses=responses((HTTPStatus.OK, JobView), HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    summary="Cancel a job that has not finished",
)
def cancel_job(job_id: Annotated[str, Path(max_length=64)]) -> JobView:
    return jobs().cancel_job(caller(), job_id)


@app.post(
    "/jobs/<job_id>/multipart",
    responses=responses((HTTPStatus.OK, MultipartTicket), HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    summary="Start or resume uploading a pending job's file in parts",
)
def start_multipart(job_id: Annotated[str, Path(max_length=64)]) -> MultipartTicket:
    return jobs().start_multipart(caller(), job_id)


@app.post(
    "/jobs/<job_id>/multipart/complete",
    responses=responses((HTTPStatus.OK, JobView), HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    summary="Join the uploaded parts into the job's file",
)
def complete_multipart(job_id: Annotated[str, Path(max_length=64)], request: CompleteMultipartRequest) -> JobView:
    return jobs().complete_multipart(caller(), job_id, request)


@app.post(
    "/jobs/<job_id>/multipart/abort",
    responses=responses((HTTPStatus.OK, JobView), HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    summary="Drop a multipart upload's parts (the job stays pending until its window closes)",
)
def abort_multipart(job_id: Annotated[str, Path(max_length=64)]) -> JobView:
    return jobs().abort_multipart(caller(), job_id)


@app.get("/models", responses=responses((HTTPStatus.OK, ModelList)), summary="The models this deployment serves")
def list_models() -> ModelList:
    caller()  # the same identity rule as every other route
    return jobs().models()


@aws.per_process
def operator_stats() -> OperatorStats:
    s = jobs().settings
    return OperatorStats.for_table(s.table_name, Dimensions(s.routing, s.default_model))


@app.get(
    ADMIN_STATS_PATH,
    responses=responses((HTTPStatus.OK, StatsReport)),
    summary="Operator statistics: failures by kind, attempts to succeed, the oldest waiting jobs, what expires "
    "(principals granted the stats policy only)",
)
def admin_stats(
    hours: Annotated[
        int, Query(ge=1, le=STATS_MAX_HOURS, description="the window: the last N hours")
    ] = STATS_DEFAULT_HOURS,
    oldest: Annotated[
        int, Query(ge=1, le=STATS_MAX_OLDEST, description="how many of the oldest waiting jobs")
    ] = STATS_DEFAULT_OLDEST,
) -> StatsReport:
    caller()  # the same identity rule as every other route; API Gateway checked the stats policy
    return operator_stats().report(hours, oldest)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    identity = (event.get("requestContext") or {}).get("identity") or {}
    response: dict[str, Any]
    try:
        owner_of(
            identity.get("userArn"), identity.get("cognitoIdentityId")
        )  # before routing and validation: no identity, no answer
    except errors.Unauthenticated as exc:
        response = {
            "statusCode": int(HTTPStatus.UNAUTHORIZED),
            "headers": {"Content-Type": content_types.APPLICATION_JSON},
            "multiValueHeaders": {},
            "body": ErrorResponse(error=ErrorBody(code=exc.code, message=exc.message)).model_dump_json(
                exclude_none=True
            ),
            "isBase64Encoded": False,
        }
    else:
        response = app.resolve(event, context)
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    cors = cors_headers(headers.get("origin"), jobs().settings.cors_origins)
    if cors:
        response.setdefault("headers", {}).update(cors)
        for name, value in cors.items():  # the proxy integration reads either form
            response.setdefault("multiValueHeaders", {})[name] = [value]
    return response


def openapi_json() -> str:
    """The API document, from the routes: their models, the statuses each returns, SigV4.
    Request validation answers 400 in the one error shape (`_invalid`), so Powertools' own
    422 and its validation-error schemas, which this API never returns, are left out."""
    doc = json.loads(
        app.get_openapi_json_schema(
            title="Batchscribe API",
            version="1.0.0",
            description="Asynchronous Whisper transcription. Every route is signed with SigV4 (IAM).",
            security_schemes={
                "sigv4": APIKey.model_validate(
                    {
                        "type": "apiKey",
                        "name": "Authorization",
                        "in": "header",
                        "description": "AWS Signature Version 4 (service execute-api); the IAM principal owns its jobs",
                        "x-amazon-apigateway-authtype": "awsSigv4",
                    }
                )
            },
            security=[{"sigv4": []}],
        )
    )
    for operations in doc["paths"].values():
        for operation in operations.values():
            operation["responses"].pop("422", None)
    schemas = doc["components"]["schemas"]
    for unused in ("HTTPValidationError", "ResponseValidationError", "ValidationError"):
        others = {k: v for k, v in schemas.items() if k != unused}
        if f'"#/components/schemas/{unused}"' not in json.dumps([doc["paths"], others]):
            schemas.pop(unused, None)
    return json.dumps(doc)
