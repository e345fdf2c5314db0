"""Synthesizing the app for a test, and reading the template it makes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk

from stacks.config import DeploymentConfig

ROOT = Path(__file__).resolve().parents[2]


def synth(tmp: Path, **overrides: Any) -> dict[str, Any]:
    """The stack's template, synthesized into `tmp` from cdk.json's config with `overrides`."""
    import app as cdk_app

    app = cdk.App(outdir=str(tmp), context=cdk_app.committed_context())
    config = DeploymentConfig.from_context({**app.node.try_get_context("batchscribe"), **overrides})
    stack = cdk_app.build(app, config)
    assembly = app.synth()  # runs the cdk-nag validation plugin: unacknowledged findings raise
    return dict(assembly.get_stack_by_name(stack.stack_name).template)


def resources(t: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in t["Resources"].items() if v["Type"] == kind}


def gateway_allow_origins(t: dict[str, Any]) -> set[str]:
    """What the API's gateway responses (its own errors) answer as Access-Control-Allow-Origin."""
    return {
        r["Properties"]["ResponseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"]
        for r in resources(t, "AWS::ApiGateway::GatewayResponse").values()
    }


def by_prefix(t: dict[str, Any], kind: str, prefix: str) -> dict[str, Any]:
    found = [v for k, v in resources(t, kind).items() if k.startswith(prefix)]
    assert len(found) == 1, (prefix, [k for k in resources(t, kind)])
    return found[0]


def resolve(value: Any) -> str:
    """A CloudFormation value as the string it becomes at deploy (references as placeholders)."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return f"ref-{value['Ref']}"
    if "Fn::GetAtt" in value:
        return ".".join(value["Fn::GetAtt"])
    if "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return str(sep).join(resolve(p) for p in parts)
    if "Fn::Base64" in value:
        return resolve(value["Fn::Base64"])
    raise AssertionError(f"unexpected intrinsic {value}")


def job_env(t: dict[str, Any], pool: str) -> dict[str, str]:
    """The environment of a pool's (`Gpu`, `Cpu`) job definition."""
    jd = by_prefix(t, "AWS::Batch::JobDefinition", f"Compute{pool}JobDefinition")["Properties"]
    return {e["Name"]: resolve(e["Value"]) for e in jd["ContainerProperties"]["Environment"]}


def job_resources(t: dict[str, Any], pool: str) -> dict[str, int]:
    jd = by_prefix(t, "AWS::Batch::JobDefinition", f"Compute{pool}JobDefinition")["Properties"]
    return {r["Type"]: int(r["Value"]) for r in jd["ContainerProperties"]["ResourceRequirements"]}
