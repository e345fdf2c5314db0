#!/usr/bin/env python3
"""The CDK app: one validated deployment config (cdk.json context `batchscribe`) -> the stack.

npx cdk synth            # offline: no Docker, no credentials
npx cdk deploy           # into the account of your AWS credentials
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.batchscribe_stack import BatchscribeStack
from stacks.config import DeploymentConfig
from stacks.nag import acknowledge

ROOT = Path(__file__).resolve().parent


def committed_context() -> dict[str, Any]:
    """cdk.json's context plus cdk.context.json: what the CLI passes, for `python app.py` runs."""
    context = dict(json.loads((ROOT / "cdk.json").read_text()).get("context", {}))
    lookups = ROOT / "cdk.context.json"
    if lookups.exists():
        context.update(json.loads(lookups.read_text()))
    return context


def build(app: cdk.App, config: DeploymentConfig | None = None) -> BatchscribeStack:
    config = config or DeploymentConfig.from_context(app.node.try_get_context("batchscribe"))
    env = cdk.Environment(account=config.account, region=config.region)
    stack = BatchscribeStack(
        app,
        config.stack_name,
        config=config,
        env=env,
        description="Batchscribe: asynchronous Whisper transcription on AWS Batch",
    )
    acknowledge(stack)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(verbose=True))
    return stack


def main() -> None:
    running_under_cli = "CDK_OUTDIR" in os.environ or "CDK_CONTEXT_JSON" in os.environ
    app = cdk.App() if running_under_cli else cdk.App(context=committed_context(), outdir=str(ROOT / "cdk.out"))
    build(app)
    app.synth()


if __name__ == "__main__":
    main()
