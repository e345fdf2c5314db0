"""What the constructs that own functions are built from: the deployment's config, the one
function factory, where jobs live, and the worker pools. The stack makes it once and hands it
to each of them, so none repeats the same five parameters."""

from __future__ import annotations

from dataclasses import dataclass

from stacks.config import DeploymentConfig
from stacks.constructs.compute import Compute
from stacks.constructs.functions import Functions
from stacks.constructs.jobs import Jobs


@dataclass(frozen=True)
class Wiring:
    config: DeploymentConfig
    functions: Functions
    jobs: Jobs
    compute: Compute
