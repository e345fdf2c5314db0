"""Every Lambda through one helper: Python 3.12 on arm64, the AWS-managed Powertools layer
(it brings pydantic), X-Ray, a log group with retention, and one role per function to which
the construct that owns it grants exactly what it needs.

A function's environment is its process's settings model (batchscribe.settings), written
with `to_env()`: the stack never types a variable's name. The code asset is the `lambdas`
and `batchscribe` packages staged into build/ at synth time: no Docker, no pip."""

from __future__ import annotations

import shutil
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from batchscribe.settings import PROCESS_SETTINGS, EnvSettings, powertools_env
from stacks.config import DeploymentConfig

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / "build" / "lambda-src"
POWERTOOLS_ACCOUNT = "017000801446"
# what the Lambda runtime imports: the handlers and the core, nothing of the app layer
LAMBDA_PACKAGES = ("batchscribe", "lambdas")


def stage_code(target: Path = STAGE) -> Path:
    """Copy the handler and core packages (and nothing else) into one asset folder."""
    if target.exists():
        shutil.rmtree(target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in LAMBDA_PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=ignore)
    return target


class Functions(Construct):
    """The shared code asset and layer; `add` makes one function in its owner's scope."""

    def __init__(self, scope: Construct, id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, id)
        self.config = config
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
        scope: Construct,
        process: str,
        settings: EnvSettings,
        *,
        timeout: Duration | None = None,
        memory: int = 512,
        singleton: bool = False,
    ) -> lambda_.Function:
        """The function that runs `lambdas/<process>/handler.py`, configured by `settings`.
        `singleton`: one execution at a time, when the deployment reserves concurrency (its
        logic is safe to overlap either way: every write it makes is conditional)."""
        expected = PROCESS_SETTINGS[process]
        if type(settings) is not expected:
            raise TypeError(f"{process} reads {expected.__name__}, not {type(settings).__name__}")
        name = "".join(part.capitalize() for part in process.split("_"))
        log_group = logs.LogGroup(
            scope,
            f"{name}Logs",
            retention=retention(self.config.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        fn = lambda_.Function(
            scope,
            name,
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            handler=f"lambdas.{process}.handler.handler",
            code=self.code,
            layers=[self.layer],
            timeout=timeout or Duration.seconds(30),
            memory_size=memory,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            reserved_concurrent_executions=1 if singleton and self.config.reserve_concurrency else None,
            environment={**powertools_env(), **settings.to_env()},
        )
        self.functions[name] = fn
        return fn


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
