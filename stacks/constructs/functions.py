"""Every Lambda through one helper: Python 3.12 on arm64, the AWS-managed Powertools layer
(it brings pydantic), X-Ray, a log group with retention, the shared environment, and one
role per function to which each caller grants exactly what that function needs.

The code asset is the `lambdas` and `batchscribe` packages staged into build/ at synth
time: no Docker, no pip."""

from __future__ import annotations

import shutil
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import DeploymentConfig

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / "build" / "lambda-src"
POWERTOOLS_ACCOUNT = "017000801446"


def stage_code(target: Path = STAGE) -> Path:
    """Copy the handler and shared packages (and nothing else) into one asset folder."""
    if target.exists():
        shutil.rmtree(target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "cli.py")
    for package in ("batchscribe", "lambdas"):
        shutil.copytree(ROOT / package, target / package, ignore=ignore)
    return target


class Functions(Construct):
    def __init__(self, scope: Construct, id: str, *, config: DeploymentConfig, environment: dict[str, str]) -> None:
        super().__init__(scope, id)
        self.config = config
        self.environment = environment
        self.code = lambda_.Code.from_asset(str(stage_code()))
        region = Stack.of(self).region
        self.layer = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "Powertools",
            f"arn:aws:lambda:{region}:{POWERTOOLS_ACCOUNT}:layer:AWSLambdaPowertoolsPythonV3-python312-arm64:"
            f"{config.powertools_layer_version}",
        )
        self.functions: dict[str, lambda_.Function] = {}

    def add(
        self,
        name: str,
        *,
        timeout: Duration | None = None,
        memory: int = 512,
        environment: dict[str, str] | None = None,
        reserved_concurrency: int | None = None,
    ) -> lambda_.Function:
        log_group = logs.LogGroup(
            self,
            f"{name}Logs",
            retention=retention(self.config.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        fn = lambda_.Function(
            self,
            name,
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            handler=f"lambdas.{_module(name)}.handler.handler",
            code=self.code,
            layers=[self.layer],
            timeout=timeout or Duration.seconds(30),
            memory_size=memory,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            reserved_concurrent_executions=reserved_concurrency,
            environment={
                "POWERTOOLS_SERVICE_NAME": "batchscribe",
                "POWERTOOLS_METRICS_NAMESPACE": "Batchscribe",
                "POWERTOOLS_LOG_LEVEL": "INFO",
                **self.environment,
                **(environment or {}),
            },
        )
        self.functions[name] = fn
        return fn


def _module(name: str) -> str:
    """Api -> api, OnUpload -> on_upload."""
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


_RETENTIONS = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
}


def retention(days: int) -> logs.RetentionDays:
    """The shortest CloudWatch retention at least `days` long."""
    return next((v for d, v in sorted(_RETENTIONS.items()) if d >= days), logs.RetentionDays.ONE_YEAR)
