"""The IAM policies the CDK stack synthesizes for each component's role (policies.json, written
by scripts/gen_policies.py), with their placeholders mapped to the local stack's resources, and
the evaluation of one request against them.

Evaluated as AWS evaluates an identity-based policy: an explicit Deny wins, else an Allow
whose Action (or NotAction) and Resource (or NotResource) match and whose Condition holds,
else the implicit deny. Wildcards `*` and `?`; actions match case-insensitively, resources
case-sensitively. Conditions: the operators in CONDITION_OPERATORS on the context keys the
request gives (requests.context: `dynamodb:LeadingKeys`); a statement with any other operator
is refused when the file is loaded, so that no condition counts as met unevaluated. Not
evaluated: resource policies
(bucket and queue policies, the secret's), KMS key policies, SCPs and permission boundaries,
and the AWS managed policies (named in the file, not expanded: AWSLambdaBasicExecutionRole
grants only CloudWatch Logs, which Lambda itself writes to). The tests check on the recorded
template what they can of these (tests/e2e/test_local_iam.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from batchscribe.resources import API_STAGE
from batchscribe_cli.local.lambda_events import LOCAL_REGION
from batchscribe_cli.provision import Provisioned

POLICIES = Path(__file__).resolve().parent / "policies.json"
MOTO_ACCOUNT = "123456789012"  # the account moto serves (moto.core.DEFAULT_ACCOUNT_ID): its ARNs name it
# The deployed stack has a GPU pool (every job not routed to the small-job pool) and a CPU pool;
# the local stack has one pool of workers, whose queues stand for the GPU pool's (routing's
# default) and whose workers run with the GPU pool's job role.
LOCAL_POOL = "Gpu"
WORKER = f"worker:{LOCAL_POOL.lower()}"
# Placeholders of resources the local stack does not have, each with why: they resolve to
# ARNs that match no local resource.
NOT_LOCAL = {
    "Compute/CpuMessages/Queue.Arn": "one local pool: it stands for the GPU pool",
    "Compute/CpuHighMessages/Queue.Arn": "one local pool: it stands for the GPU pool",
    "Compute/CpuLowMessages/Queue.Arn": "one local pool: it stands for the GPU pool",
    "Compute/CpuMessages/Dlq.Arn": "one local pool: it stands for the GPU pool",
    "Compute/CpuHighMessages/Dlq.Arn": "one local pool: it stands for the GPU pool",
    "Compute/CpuLowMessages/Dlq.Arn": "one local pool: it stands for the GPU pool",
    "Compute/CpuQueue.JobQueueArn": "workers are local processes (no Batch API call)",
    "Compute/CpuJobDefinition": "workers are local processes (no Batch API call)",
    "Compute/GpuQueue.JobQueueArn": "workers are local processes (no Batch API call)",
    "Compute/GpuJobDefinition": "workers are local processes (no Batch API call)",
    "Compute/CpuOnDemandQueue.JobQueueArn": "workers are local processes (no Batch API call)",
    "Compute/GpuOnDemandQueue.JobQueueArn": "workers are local processes (no Batch API call)",
    "Notify/Failures.Arn": "the local stream source leaves a failed batch behind with a line on the terminal",
    "Notify/WebhookSigningSecret": "the local webhook sender is given its secret in its settings",
}


# the local API gateway's stand-in for the REST API's id (execute-api ARNs)
LOCAL_API_ID = "local"
INVOKE = "invoke"  # the caller policy every caller holds (the deployer attaches it to callers)
STATS = "stats"  # the caller policy of the operator's statistics route


def execute_api_arn(method: str, path: str) -> str:
    """The ARN API Gateway's IAM check evaluates for a request to the local API."""
    return f"arn:aws:execute-api:{LOCAL_REGION}:{MOTO_ACCOUNT}:{LOCAL_API_ID}/{API_STAGE}/{method}{path}"


def sqs_arn(queue: str) -> str:
    """A queue's ARN from its URL or name (moto's URLs end with account/name)."""
    parts = queue.rstrip("/").split("/")
    account = parts[-2] if len(parts) >= 2 and parts[-2].isdigit() else MOTO_ACCOUNT
    return f"arn:aws:sqs:{LOCAL_REGION}:{account}:{parts[-1]}"


def table_arn(table: str) -> str:
    return f"arn:aws:dynamodb:{LOCAL_REGION}:{MOTO_ACCOUNT}:table/{table}"


def local_values(r: Provisioned, stream_arn: str, scaler_function: str) -> dict[str, str]:
    """What each placeholder of policies.json is in this local stack."""
    pool = {}
    for cls, url, dlq in (
        ("", r.jobs_queue_url, r.jobs_dlq_url),
        ("High", r.class_queue_urls["high"], r.class_dlq_urls["high"]),
        ("Low", r.class_queue_urls["low"], r.class_dlq_urls["low"]),
    ):
        pool[f"Compute/{LOCAL_POOL}{cls}Messages/Queue.Arn"] = sqs_arn(url)
        pool[f"Compute/{LOCAL_POOL}{cls}Messages/Dlq.Arn"] = sqs_arn(dlq)
    return {
        "AWS::Partition": "aws",
        "AWS::AccountId": MOTO_ACCOUNT,
        "AWS::Region": LOCAL_REGION,
        "AWS::URLSuffix": "amazonaws.com",
        "Jobs/Table.Arn": table_arn(r.table),
        "Jobs/Table.StreamArn": stream_arn,
        "Jobs/Media.Arn": f"arn:aws:s3:::{r.bucket}",
        "Intake/Uploads/Queue.Arn": sqs_arn(r.uploads_queue_url),
        "Notify/Webhooks/Queue.Arn": sqs_arn(r.webhooks_queue_url),
        "Scaling/Scaler.Arn": f"arn:aws:lambda:{LOCAL_REGION}:{MOTO_ACCOUNT}:function:{scaler_function}",
        "Api/Gateway": LOCAL_API_ID,
        f"Api/Gateway/DeploymentStage.{API_STAGE}": API_STAGE,
        **pool,
    }


_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


def placeholders(document: Mapping[str, Any]) -> set[str]:
    return set(_PLACEHOLDER.findall(json.dumps(document)))


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Placeholders replaced by their local value; one the local stack lacks becomes a name
    that matches no ARN (`(not local: Compute/CpuQueue.JobQueueArn)`)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), f"(not local: {m.group(1)})"), text)


@cache
def _pattern(glob: str, case_sensitive: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile(f"^{body}$", 0 if case_sensitive else re.IGNORECASE)


def _matches(globs: list[str], value: str, case_sensitive: bool) -> bool:
    return any(_pattern(g, case_sensitive).match(value) for g in globs)


Context = Mapping[str, list[str]]  # a request's condition keys and their values


def _for_all_values_string_equals(values: list[str] | None, allowed: list[str]) -> bool:
    """Every value the request gives is allowed (AWS: true too when it gives none)."""
    return all(v in allowed for v in values or [])


def _string_equals(values: list[str] | None, allowed: list[str]) -> bool:
    """The request gives the key, with one value, an allowed one."""
    return values is not None and len(values) == 1 and values[0] in allowed


def _for_all_values_string_like(values: list[str] | None, allowed: list[str]) -> bool:
    """Every value the request gives matches an allowed pattern (`*`, `?`; true when it gives none)."""
    return all(_matches(allowed, v, True) for v in values or [])


CONDITION_OPERATORS: dict[str, Callable[[list[str] | None, list[str]], bool]] = {
    "ForAllValues:StringEquals": _for_all_values_string_equals,
    "ForAllValues:StringLike": _for_all_values_string_like,
    "StringEquals": _string_equals,
}


@dataclass(frozen=True)
class Statement:
    effect: str
    actions: list[str]
    resources: list[str]
    not_action: bool = False
    not_resource: bool = False
    conditions: Mapping[str, Mapping[str, list[str]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Statement:
        conditions = {op: {k: _list(v) for k, v in keys.items()} for op, keys in raw.get("Condition", {}).items()}
        unknown = set(conditions) - set(CONDITION_OPERATORS)
        if unknown:
            raise ValueError(
                f"the local IAM check cannot evaluate the condition operator(s) {sorted(unknown)} of {raw}: "
                "add them to policies.CONDITION_OPERATORS (a condition must never count as met unevaluated)"
            )
        return cls(
            effect=raw["Effect"],
            actions=list(raw.get("NotAction", raw.get("Action", []))),
            resources=list(raw.get("NotResource", raw.get("Resource", []))),
            not_action="NotAction" in raw,
            not_resource="NotResource" in raw,
            conditions=conditions,
        )

    def applies(self, action: str, resource: str, context: Context | None = None) -> bool:
        return (
            _matches(self.actions, action, False) != self.not_action
            and _matches(self.resources, resource, True) != self.not_resource
            and self.holds(context or {})
        )

    def holds(self, context: Context) -> bool:
        """Every condition of the statement, on the request's context keys."""
        return all(
            CONDITION_OPERATORS[op](context.get(key), allowed)
            for op, keys in self.conditions.items()
            for key, allowed in keys.items()
        )


def _list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class Policy:
    """One component's role: its name (the construct path) and its statements."""

    component: str
    role: str
    statements: tuple[Statement, ...]

    def allows(self, action: str, resource: str, context: Context | None = None) -> bool:
        applying = [s for s in self.statements if s.applies(action, resource, context)]
        return any(s.effect == "Allow" for s in applying) and not any(s.effect == "Deny" for s in applying)

    @property
    def principal(self) -> str:
        """The caller as AWS names it in a denial: the role's session."""
        role, session = self.role.replace("/", "-"), self.component.replace(":", "-")
        return f"arn:aws:sts::{MOTO_ACCOUNT}:assumed-role/{role}/{session}"

    def to_json(self) -> str:
        return json.dumps(
            {
                "component": self.component,
                "role": self.role,
                "statements": [
                    {
                        "Effect": s.effect,
                        "NotAction" if s.not_action else "Action": s.actions,
                        "NotResource" if s.not_resource else "Resource": s.resources,
                        **({"Condition": s.conditions} if s.conditions else {}),
                    }
                    for s in self.statements
                ],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Policy:
        raw = json.loads(text)
        return cls(raw["component"], raw["role"], tuple(Statement.parse(s) for s in raw["statements"]))


def read(path: Path | None = None) -> dict[str, Any]:
    source = path or POLICIES
    if not source.exists():
        raise FileNotFoundError(f"{source} is missing: run `make policies` (python -m scripts.gen_policies)")
    document: dict[str, Any] = json.loads(source.read_text())
    return document


def load_callers(values: Mapping[str, str], path: Path | None = None) -> dict[str, Policy]:
    """The policies for the API's callers (policies.json `callers`: `invoke`, `stats`), resolved
    to the local API's ARNs."""
    callers = json.loads(substitute(json.dumps(read(path).get("callers", {})), values))
    return {
        name: Policy(f"caller:{name}", c["policy"], tuple(Statement.parse(s) for s in c["statements"]))
        for name, c in callers.items()
    }


def load(values: Mapping[str, str], path: Path | None = None) -> dict[str, Policy]:
    """Each component's policy (policies.json, or `path`), resolved to the local resources."""
    components = json.loads(substitute(json.dumps(read(path)["components"]), values))
    return {
        name: Policy(name, c["role"], tuple(Statement.parse(s) for s in c["statements"]))
        for name, c in components.items()
    }
