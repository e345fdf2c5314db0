"""Every Lambda through one helper: Python 3.12 on arm64, X-Ray, a log group with retention,
and one role per function to which the construct that owns it grants exactly what it needs.

A function's environment is its process's settings model (batchscribe.settings), written
with `to_env()`: the stack never types a variable's name. The code asset is the `lambdas`
and `batchscribe` packages staged into a folder of build/ at synth time, with Powertools (and its one
dependency the Lambda runtime lacks) copied in from this environment, at exactly the version
lambdas/requirements.txt pins and the tests run: synth fails on any other. No Docker, no pip.
The AWS-managed Powertools layer stays for what cannot be copied from here: pydantic's
compiled core (built for arm64) and the X-Ray SDK; the function's own folder (/var/task) comes
first on Lambda's import path, so the bundled Powertools is the one imported."""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import shutil
import tempfile
from pathlib import Path

from aws_cdk import Duration, Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from batchscribe.settings import PROCESS_SETTINGS, EnvSettings, powertools_env
from stacks.config import DeploymentConfig
from stacks.constructs.logs import log_group

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
POWERTOOLS_ACCOUNT = "017000801446"
# what the Lambda runtime imports: the handlers and the core, nothing of the app layer
LAMBDA_PACKAGES = ("batchscribe", "lambdas")
LAMBDA_REQUIREMENTS = ROOT / "lambdas" / "requirements.txt"
# pure-Python distributions copied into the asset (distribution, import name), each at its pin
BUNDLED = (("aws-lambda-powertools", "aws_lambda_powertools"), ("typing-extensions", "typing_extensions"))


def staging_folder() -> Path:
    """A fresh folder under build/ for this process's asset, removed when the process ends (CDK
    copies the asset into the cloud assembly at synth): synths running at once never share one."""
    BUILD.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="lambda-src-", dir=BUILD))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def stage_code(target: Path) -> Path:
    """Copy the handler and core packages (and nothing else) into one asset folder."""
    if target.exists():
        shutil.rmtree(target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in LAMBDA_PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=ignore)
    return target


def pins(requirements: Path = LAMBDA_REQUIREMENTS) -> dict[str, str]:
    """`name==version` lines of a requirements file, by normalized name."""
    out = {}
    for line in requirements.read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def bundle(target: Path, requirements: Path = LAMBDA_REQUIREMENTS) -> Path:
    """Copy each BUNDLED distribution, as installed here, into the asset: only at its pinned version."""
    pinned = pins(requirements)
    for dist, module in BUNDLED:
        installed = importlib.metadata.version(dist)
        if installed != pinned.get(dist):
            raise RuntimeError(
                f"{dist} {installed} is installed, {requirements.name} pins {pinned.get(dist)}: the functions "
                "must run the version the tests run (install the pin, or change it and rerun the tests)"
            )
        found = importlib.util.find_spec(module)
        if found is None or found.origin is None:
            raise RuntimeError(f"{module} is not importable here")
        origin = Path(found.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, target / module, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, target / origin.name)
    return target


class Functions(Construct):
    """The shared code asset and layer; `add` makes one function in its owner's scope."""

    def __init__(self, scope: Construct, id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, id)
        self.config = config
        self.code = lambda_.Code.from_asset(str(bundle(stage_code(staging_folder() / "asset"))))
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
        logs = log_group(scope, f"{name}Logs", self.config.log_retention_days)
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
            log_group=logs,
            reserved_concurrent_executions=1 if singleton and self.config.reserve_concurrency else None,
            environment={**powertools_env(), **settings.to_env()},
        )
        self.functions[name] = fn
        return fn
