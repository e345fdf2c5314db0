"""The API: a REST API with IAM auth on every method, request validation, access and
execution logs, X-Ray, throttling and CORS, and one Lambda proxy integration (the API
function) for all routes."""

from __future__ import annotations

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from batchscribe.resources import ADMIN_STATS_PATH, API_STAGE, CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS
from batchscribe.settings import ApiSettings
from stacks.config import DeploymentConfig
from stacks.constructs.logs import log_group
from stacks.constructs.wiring import Wiring

# (path, method) pairs; the Lambda's router owns the behaviour, API Gateway owns auth.
ROUTES: tuple[tuple[str, str], ...] = (
    ("/jobs", "GET"),
    ("/jobs", "POST"),
    ("/jobs/{job_id}", "GET"),
    ("/jobs/{job_id}/input", "GET"),
    ("/jobs/{job_id}/cancel", "POST"),
    ("/jobs/{job_id}/multipart", "POST"),
    ("/jobs/{job_id}/multipart/complete", "POST"),
    ("/jobs/{job_id}/multipart/abort", "POST"),
    ("/models", "GET"),
    (ADMIN_STATS_PATH, "GET"),
)
# the paths the invoke policy covers: every route but the operator's (the stats policy's)
INVOKE_PATHS: tuple[str, ...] = ("/jobs", "/jobs/*", "/models")


def invoke_arns(api: apigw.RestApi) -> list[str]:
    """The execute-api ARNs of INVOKE_PATHS on `api`'s stage, any method: what a caller of the
    job API is granted (the invoke policy, the console's signed-in people)."""
    stage = api.deployment_stage.stage_name
    return [api.arn_for_execute_api(method="*", path=p, stage=stage) for p in INVOKE_PATHS]


# Errors API Gateway itself answers (auth, throttling), each with the service's error code; the
# two defaults cover every other type (a 401, 413, 415 or 429 of its own), so that a browser can
# read each of them too
GATEWAY_ERRORS: tuple[tuple[apigw.ResponseType, str], ...] = (
    (apigw.ResponseType.ACCESS_DENIED, "forbidden"),
    # an unsigned request (and, by API Gateway's design, an unknown route)
    (apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "route_not_found"),
    (apigw.ResponseType.INVALID_SIGNATURE, "invalid_signature"),
    (apigw.ResponseType.EXPIRED_TOKEN, "expired_token"),
    (apigw.ResponseType.THROTTLED, "throttled"),
    (apigw.ResponseType.BAD_REQUEST_BODY, "invalid_request"),
    (apigw.ResponseType.DEFAULT_4_XX, "request_rejected"),
    (apigw.ResponseType.DEFAULT_5_XX, "internal_error"),
)
# the access log's fields: who called what, when, and how it ended
ACCESS_LOG_FIELDS = (
    "caller",
    "http_method",
    "ip",
    "protocol",
    "request_time",
    "resource_path",
    "response_length",
    "status",
    "user",
)


class Api(Construct):
    def __init__(self, scope: Construct, id: str, wiring: Wiring, *, scaler: lambda_.IFunction) -> None:
        super().__init__(scope, id)
        self.function = self._function(wiring, scaler)
        self.api = self._gateway(wiring.config)
        self.validator = apigw.RequestValidator(
            self, "Validator", rest_api=self.api, validate_request_body=True, validate_request_parameters=True
        )
        self._routes()
        self._gateway_errors(wiring.config.cors_origins)
        self.invoke_policy = self._invoke_policy()
        self.stats_policy = self._stats_policy()

    def _function(self, wiring: Wiring, scaler: lambda_.IFunction) -> lambda_.Function:
        """The API function, configured from the deployment, and what it may do."""
        config, jobs, compute = wiring.config, wiring.jobs, wiring.compute
        t = config.timings
        fn = wiring.functions.add(
            self,
            "api",
            ApiSettings(
                **jobs.store,
                max_upload_bytes=config.max_upload_bytes,
                upload_window_seconds=t.upload_window_seconds,
                result_url_seconds=t.result_url_seconds,
                job_retention_days=config.output_retention_days,
                cors_origins=config.cors_origins,
                default_model=config.model,
                small_job_model=config.cpu_model if config.cpu_pool else None,
                small_job_max_bytes=config.small_job_max_mb * 1024 * 1024 if config.cpu_pool else 0,
                high_priority_owners=config.high_priority_owners,
                create_rate_limit=config.create_rate_limit,
                create_rate_window_seconds=config.create_rate_window_seconds,
                routing=compute.routing,  # a queued job's position; where a source-URL job's message goes
                scaler_function_name=scaler.function_name,
            ),
            memory=512,
        )
        jobs.grant_api(fn)
        compute.grant_depth(fn)
        compute.grant_send(fn)  # a source-URL job is queued at create: no upload to wait for
        scaler.grant_invoke(fn)
        return fn

    def _gateway(self, config: DeploymentConfig) -> apigw.RestApi:
        """The REST API and its stage: IAM on every method, access and error logs, X-Ray,
        throttling, CORS preflight."""
        access_logs = log_group(self, "AccessLogs", config.log_retention_days)
        log_format = apigw.AccessLogFormat.json_with_standard_fields(**dict.fromkeys(ACCESS_LOG_FIELDS, True))
        return apigw.RestApi(
            self,
            "Gateway",
            description="Batchscribe job API",
            cloud_watch_role=True,
            deploy_options=apigw.StageOptions(
                stage_name=API_STAGE,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=log_format,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                tracing_enabled=True,
                throttling_rate_limit=config.api_rate_limit,
                throttling_burst_limit=config.api_burst_limit,
            ),
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
            default_cors_preflight_options=apigw.CorsOptions(
                allow_origins=config.cors_origins,
                allow_methods=list(CORS_ALLOW_METHODS),
                allow_headers=list(CORS_ALLOW_HEADERS),
            ),
            endpoint_types=[apigw.EndpointType.REGIONAL],
        )

    def _routes(self) -> None:
        """Every route of the function's router, validated and SigV4-signed, one proxy integration."""
        integration = apigw.LambdaIntegration(self.function, proxy=True)
        for path, method in ROUTES:
            self.api.root.resource_for_path(path).add_method(
                method,
                integration,
                authorization_type=apigw.AuthorizationType.IAM,
                request_validator=self.validator,
                request_parameters={"method.request.path.job_id": True} if "{job_id}" in path else None,
            )

    def _invoke_policy(self) -> iam.ManagedPolicy:
        """What a caller other than the deployer needs to call the API: attach it to their role,
        user or group (docs/deploy.md). The job and model routes of this API's stage, not the
        operator's statistics (its own policy, `_stats_policy`)."""
        return iam.ManagedPolicy(
            self,
            "InvokePolicy",
            description="Call the Batchscribe job API (the job and model routes of its stage)",
            statements=[iam.PolicyStatement(actions=["execute-api:Invoke"], resources=invoke_arns(self.api))],
        )

    def _stats_policy(self) -> iam.ManagedPolicy:
        """What an operator needs for `batchscribe stats`: GET /admin/stats of this API's stage and
        nothing else (aggregates and job ids across every owner: never in the invoke policy)."""
        stage = self.api.deployment_stage.stage_name
        return iam.ManagedPolicy(
            self,
            "StatsPolicy",
            description="Read the Batchscribe operator statistics (GET /admin/stats: every owner's aggregates)",
            statements=[
                iam.PolicyStatement(
                    actions=["execute-api:Invoke"],
                    resources=[self.api.arn_for_execute_api(method="GET", path=ADMIN_STATS_PATH, stage=stage)],
                )
            ],
        )

    def _gateway_errors(self, origins: list[str]) -> None:
        """Errors API Gateway itself answers in the service's one error shape, with the CORS
        header so that a browser can read them. With several allowed origins the gateway cannot
        check which one asked, so it echoes the caller's Origin: these bodies carry no data,
        only the error code."""
        allow_origin = (
            "'*'" if "*" in origins else f"'{origins[0]}'" if len(origins) == 1 else "method.request.header.Origin"
        )
        for response_type, code in GATEWAY_ERRORS:
            self.api.add_gateway_response(
                f"Gw{code}",
                type=response_type,
                response_headers={
                    "Access-Control-Allow-Origin": allow_origin,
                    "Access-Control-Allow-Headers": "'" + ",".join(CORS_ALLOW_HEADERS) + "'",
                },
                templates={
                    "application/json": f'{{"error": {{"code": "{code}", "message": $context.error.messageString}}}}'
                },
            )
