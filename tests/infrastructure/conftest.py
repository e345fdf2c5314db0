"""The default deployment's template, synthesized once per test process (a synth takes 5-40 s
here), for every module of the infrastructure tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")  # before jsii starts node

from aws_cdk.assertions import Template

from tests.infrastructure.templates import synth


@pytest.fixture(scope="session")
def cdk_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cdk")


@pytest.fixture(scope="session")
def template_json(cdk_out: Path) -> dict[str, Any]:
    return synth(cdk_out)


@pytest.fixture(scope="session")
def template(template_json: dict[str, Any]) -> Template:
    return Template.from_json(template_json)
