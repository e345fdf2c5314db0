"""IAM in the local stack: each component's AWS calls are checked against the policy the CDK
stack synthesizes for its role (batchscribe_cli/local/policies.json, generated from the CDK
code). These tests show that the evaluation is right, that the file is what the CDK code says,
that a call the role does not allow fails as on AWS before it reaches moto, and that the whole
pipeline runs under the deployed policies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from batchscribe import aws
from batchscribe.models import JobMessage
from batchscribe.queue import ClassQueues, JobQueue
from batchscribe.resources import SCALER_LEASE, TABLE_KEY, lease_item_id
from batchscribe.storage import MediaStore
from batchscribe_cli.local import IN_PROCESS, iam
from batchscribe_cli.local.policies import (
    CONDITION_OPERATORS,
    MOTO_ACCOUNT,
    NOT_LOCAL,
    WORKER,
    Policy,
    Statement,
    load,
    local_values,
    placeholders,
    read,
    sqs_arn,
    table_arn,
)
from batchscribe_cli.local.requests import checks
from batchscribe_cli.provision import Provisioned
from harness import faults

ROOT = Path(__file__).resolve().parents[2]

# ---- the evaluation --------------------------------------------------------------------


def policy(*statements: dict[str, Any]) -> Policy:
    return Policy("test", "Test/Role", tuple(Statement.parse(s) for s in statements))


def test_an_explicit_deny_wins_and_nothing_is_allowed_unless_a_statement_allows_it() -> None:
    p = policy(
        {"Effect": "Allow", "Action": ["s3:GetObject*"], "Resource": ["arn:aws:s3:::b/*"]},
        {"Effect": "Deny", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::b/secret/*"]},
    )
    assert p.allows("s3:GetObject", "arn:aws:s3:::b/uploads/x")
    assert p.allows("s3:GetObjectVersion", "arn:aws:s3:::b/uploads/x")
    assert not p.allows("s3:GetObject", "arn:aws:s3:::b/secret/x")  # denied, though allowed above
    assert not p.allows("s3:PutObject", "arn:aws:s3:::b/uploads/x")  # no statement: implicit deny
    assert not p.allows("s3:GetObject", "arn:aws:s3:::other/x")


def test_wildcards_case_and_the_not_elements_match_as_iam_matches_them() -> None:
    p = policy(
        {"Effect": "Allow", "Action": ["SQS:send*"], "Resource": ["arn:aws:sqs:us-east-1:1:jobs-?"]},
        {"Effect": "Allow", "NotAction": ["dynamodb:Delete*"], "Resource": ["arn:aws:dynamodb:*:*:table/t"]},
        {"Effect": "Allow", "Action": ["events:PutEvents"], "NotResource": ["arn:aws:events:*:*:event-bus/x"]},
    )
    assert p.allows("sqs:SendMessage", "arn:aws:sqs:us-east-1:1:jobs-a")  # actions: any case
    assert not p.allows("sqs:SendMessage", "arn:aws:sqs:us-east-1:1:jobs-ab")  # ? is one character
    assert not p.allows("sqs:SendMessage", "arn:aws:sqs:us-east-1:1:JOBS-a")  # resources: exact case
    assert p.allows("dynamodb:GetItem", "arn:aws:dynamodb:r:1:table/t")
    assert not p.allows("dynamodb:DeleteItem", "arn:aws:dynamodb:r:1:table/t")
    assert p.allows("events:PutEvents", "arn:aws:events:r:1:event-bus/default")
    assert not p.allows("events:PutEvents", "arn:aws:events:r:1:event-bus/x")
    # a dot in a pattern is a dot (moto's evaluator reads patterns as regular expressions)
    assert not policy({"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::a.b/*"]}).allows(
        "s3:GetObject", "arn:aws:s3:::axb/k"
    )


def test_each_call_names_the_action_and_resource_iam_authorizes() -> None:
    table = table_arn("t")
    assert checks("dynamodb", "Query", {"TableName": "t", "IndexName": "by_owner"}) == [
        ("dynamodb:Query", f"{table}/index/by_owner")
    ]
    transaction = {"TransactItems": [{"Update": {"TableName": "t"}}, {"Put": {"TableName": "t"}}]}
    assert checks("dynamodb", "TransactWriteItems", transaction) == [
        ("dynamodb:UpdateItem", table),
        ("dynamodb:PutItem", table),
    ]
    url = f"http://127.0.0.1:5000/{MOTO_ACCOUNT}/jobs-high"
    assert checks("sqs", "SendMessage", {"QueueUrl": url}) == [("sqs:SendMessage", sqs_arn(url))]
    assert checks("s3", "HeadObject", {"Bucket": "b", "Key": "k/1", "VersionId": "v"}) == [
        ("s3:GetObjectVersion", "arn:aws:s3:::b/k/1")
    ]
    assert checks("s3", "CreateMultipartUpload", {"Bucket": "b", "Key": "k"}) == [("s3:PutObject", "arn:aws:s3:::b/k")]


# ---- the policies are the CDK stack's --------------------------------------------------


@pytest.mark.slow
def test_policies_json_is_what_the_cdk_code_synthesizes() -> None:
    from scripts.gen_policies import POLICIES, render

    assert POLICIES.read_text() == render(), "policies.json is stale: run `make policies` and commit it"


def test_every_component_has_a_policy_and_every_resource_it_names_is_decided_locally() -> None:
    """What the local check cannot evaluate is kept out of the policies it reads: every
    Condition's operator is one it evaluates (an unevaluated condition would count as met; load
    refuses any other); and a resource the template adds is either mapped to a local one or
    named as not local, never silently unmatched."""
    components = read()["components"]
    assert set(IN_PROCESS) | {WORKER} <= set(components)
    for name, component in components.items():
        for statement in component["statements"]:
            assert set(statement.get("Condition", {})) <= set(CONDITION_OPERATORS), (name, statement)
    values = local_values(_fake_provisioned(), stream_arn="s", scaler_function="f")
    unknown = placeholders(components) - set(values) - set(NOT_LOCAL)
    assert not unknown, f"map these in policies.local_values or name them in NOT_LOCAL: {sorted(unknown)}"


def _fake_provisioned() -> Provisioned:
    url = f"http://h/{MOTO_ACCOUNT}/q"
    return Provisioned("t", "b", url, url, url, url, url, {"high": url, "low": url}, {"high": url, "low": url})


# ---- enforced on calls made against moto -----------------------------------------------


@pytest.fixture
def enforced(aws_stack: Provisioned) -> Iterator[tuple[iam.Enforcer, list[str]]]:
    """The committed policies, resolved to this module's moto resources, checked from now on."""
    stream = boto3.client("dynamodb").describe_table(TableName=aws_stack.table)["Table"]["LatestStreamArn"]
    lines: list[str] = []
    enforcer = iam.Enforcer(load(local_values(aws_stack, stream, "scaler")), lines.append)
    iam.enforce(enforcer)
    try:
        yield enforcer, lines
    finally:
        iam.enforce(None)
        aws.reset()


def test_the_worker_role_may_put_a_job_over_its_owners_cap_back_on_its_queue(
    aws_stack: Provisioned, enforced: tuple[iam.Enforcer, list[str]]
) -> None:
    """ClassQueues.send_later re-sends the message of a job whose owner is at its running cap
    (sqs:SendMessage on the queue it came from): the worker role must allow it, or deployed the
    call fails, the worker exits, and the job ends in the dead-letter queue."""
    enforcer, lines = enforced
    JobQueue(aws_stack.class_queue_urls["high"]).send(JobMessage(job_id="j1"))  # the platform's (intake) send
    queues = ClassQueues(aws_stack.jobs_queue_url, aws_stack.class_queue_urls)
    with iam.acting_as(WORKER):
        [received] = queues.receive(wait_seconds=0)
        queues.send_later(received, 1)
    assert not lines and not enforcer.denied
    assert enforcer.counts[(WORKER, "sqs:SendMessage", sqs_arn(aws_stack.class_queue_urls["high"]))] == 1


def test_a_call_the_role_does_not_allow_fails_as_on_aws_and_never_reaches_the_service(
    aws_stack: Provisioned, enforced: tuple[iam.Enforcer, list[str]]
) -> None:
    _, lines = enforced
    key = {"job_id": {"S": "j1"}}
    aws.client("dynamodb").put_item(TableName=aws_stack.table, Item=key)  # the platform: unchecked
    with iam.acting_as("api"), pytest.raises(ClientError) as denied:
        aws.client("dynamodb").delete_item(TableName=aws_stack.table, Key=key)  # the API may not delete
    error = denied.value.response["Error"]
    assert error["Code"] == "AccessDeniedException"
    assert error["Message"].startswith("User: arn:aws:sts::123456789012:assumed-role/Api-Api-ServiceRole/api ")
    assert (
        f"not authorized to perform: dynamodb:DeleteItem on resource: {table_arn(aws_stack.table)}"
        in (error["Message"])
    )
    assert "Item" in boto3.client("dynamodb").get_item(TableName=aws_stack.table, Key=key)  # still there
    assert lines == [f"IAM: denied api: dynamodb:DeleteItem on {table_arn(aws_stack.table)} (dynamodb.DeleteItem)"]
    with iam.acting_as("worker:gpu"), pytest.raises(ClientError) as unknown:
        aws.client("sqs").list_queues()  # no resource rule for it: refused, loudly
    assert "unknown operation sqs.ListQueues" in unknown.value.response["Error"]["Message"]
    assert any("refused worker:gpu's call sqs.ListQueues" in line for line in lines)


def test_presigned_urls_are_checked_when_they_are_made(
    aws_stack: Provisioned, enforced: tuple[iam.Enforcer, list[str]]
) -> None:
    """A presigned request is made with the signer's permissions: the API may sign an upload
    to uploads/ (not to outputs/) and a download of outputs/ and of uploads/ (the console plays
    an owner's own upload back), of nothing else in the bucket."""
    enforcer, _ = enforced
    store = MediaStore(aws_stack.bucket)
    with iam.acting_as("api"):
        store.presign_upload("uploads/o/j/input", "audio/wav", 100, 60)
        store.presign_get("outputs/o/j/transcript.txt", 60)
        store.presign_get("uploads/o/j/input", 60)
        with pytest.raises(ClientError, match=r"s3:PutObject on resource: arn:aws:s3:::.*/outputs/o/j/x"):
            store.presign_upload("outputs/o/j/x", "audio/wav", 100, 60)
        with pytest.raises(ClientError, match=r"s3:GetObject on resource: arn:aws:s3:::.*/elsewhere/o/j/input"):
            store.presign_get("elsewhere/o/j/input", 60)
        with pytest.raises(ClientError, match="s3:PutObject"):
            store.presign_part("outputs/o/j/x", "upload-id", 1, 60)
    bucket = f"arn:aws:s3:::{aws_stack.bucket}"
    assert enforcer.counts[("api", "s3:PutObject", f"{bucket}/uploads/o/j/input")] == 1
    assert enforcer.counts[("api", "s3:GetObject", f"{bucket}/outputs/o/j/transcript.txt")] == 1
    assert enforcer.counts[("api", "s3:GetObject", f"{bucket}/uploads/o/j/input")] == 1


def test_each_pools_worker_may_send_to_its_own_class_queues_and_no_others() -> None:
    """The re-send of a job over its owner's cap goes to the queue it came from: each worker
    role may send to its pool's three class queues, not to the other pool's or to a DLQ."""
    components = read()["components"]
    for pool, other in (("Gpu", "Cpu"), ("Cpu", "Gpu")):
        worker = load({}, None)[f"worker:{pool.lower()}"]
        assert worker.role == components[f"worker:{pool.lower()}"]["role"]
        for cls in ("", "High", "Low"):
            assert worker.allows("sqs:SendMessage", f"(not local: Compute/{pool}{cls}Messages/Queue.Arn)")
            assert not worker.allows("sqs:SendMessage", f"(not local: Compute/{other}{cls}Messages/Queue.Arn)")
            assert not worker.allows("sqs:SendMessage", f"(not local: Compute/{pool}{cls}Messages/Dlq.Arn)")


# ---- what the local check does not evaluate, checked on the template ------------------


def test_the_resource_policies_deny_only_requests_without_tls_and_allow_only_two_services() -> None:
    """Resource policies (bucket, queues, secret) are not evaluated locally. Deployed, theirs
    deny only requests made without TLS (the SDKs always use it; the local endpoint is plain
    http, so they could not apply here), and allow only S3 to send the upload notifications to
    the uploads queue and the console's CloudFront distribution to read the console's files
    (origin access control): none of them can deny a component a call its role allows."""
    groups = read()["resource_policies"]
    assert groups, "the stack's bucket and queue policies are recorded (scripts/gen_policies.py)"
    allowed = {}
    for group in groups:
        for statement in group["statements"]:
            if statement["Effect"] == "Deny":
                assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, group
            else:
                allowed[tuple(group["resources"])] = (statement["Principal"], statement["Condition"])
    distribution = "arn:${AWS::Partition}:cloudfront::${AWS::AccountId}:distribution/${Console/Distribution}"
    assert allowed == {
        ("Intake/Uploads/Queue",): (
            {"Service": "s3.amazonaws.com"},
            {"ArnLike": {"aws:SourceArn": "${Jobs/Media.Arn}"}},
        ),
        ("Console/Site",): ({"Service": "cloudfront.amazonaws.com"}, {"StringEquals": {"AWS:SourceArn": distribution}}),
    }


def test_no_resource_a_component_touches_is_encrypted_with_a_key_whose_policy_goes_unchecked() -> None:
    """KMS key policies and kms: grants are not evaluated locally. The customer managed keys
    encrypt the alarm topic (CloudWatch publishes to it) and the log groups (the Lambda runtime
    and the awslogs driver write them, CloudWatch Logs encrypts): no component calls either; the
    table, bucket and queues use AWS owned keys (nothing to grant)."""
    keys = read()["customer_managed_keys"]
    assert keys.pop("Monitoring/Alarms") == ["${Monitoring/AlarmsKey.Arn}"]
    assert keys and all(resource.endswith("Logs") for resource in keys), keys
    assert {k for v in keys.values() for k in v} == {"${LogsKey.Arn}"}
    services = {
        action.split(":")[0]
        for component in read()["components"].values()
        for statement in component["statements"]
        for action in statement["Action"]
    }
    assert not services & {"kms", "logs", "sns"}, services


def test_the_scaler_may_write_its_lease_item_and_no_other_item_of_the_table() -> None:
    """The scaler's grant on the jobs table holds only for its lease's key (dynamodb:LeadingKeys,
    evaluated from the call's Key): the lease works, a job's item is refused."""
    scaler = load(local_values(_fake_provisioned(), stream_arn="s", scaler_function="f"))["scaler"]
    enforcer = iam.Enforcer({"scaler": scaler}, say=lambda line: None, default="scaler")
    table = _fake_provisioned().table
    lease = {"TableName": table, "Key": {TABLE_KEY: {"S": lease_item_id(SCALER_LEASE)}}}
    enforcer.check_call("dynamodb", "UpdateItem", {**lease, "UpdateExpression": "SET h = :h"})
    enforcer.check_call("dynamodb", "GetItem", lease)
    for operation, params in (
        ("UpdateItem", {"TableName": table, "Key": {TABLE_KEY: {"S": "job-1"}}}),
        ("GetItem", {"TableName": table, "Key": {TABLE_KEY: {"S": "job-1"}}}),
        ("PutItem", lease),
        ("Query", {"TableName": table, "KeyConditionExpression": "job_id = :k"}),
    ):
        with pytest.raises(ClientError) as denied:
            enforcer.check_call("dynamodb", operation, params)
        assert denied.value.response["Error"]["Code"] == "AccessDeniedException", operation


def test_conditions_are_evaluated_as_aws_does_and_unknown_operators_refused() -> None:
    """ForAllValues:StringEquals holds when every value given is allowed (and, as on AWS, when the
    request gives none); StringEquals needs the key given; an operator the check does not know
    is refused at load, never counted as met."""
    allowed = {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["a"]}}
    statement = Statement.parse(
        {"Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": ["*"], "Condition": allowed}
    )
    assert statement.applies("dynamodb:GetItem", "t", {"dynamodb:LeadingKeys": ["a"]})
    assert not statement.applies("dynamodb:GetItem", "t", {"dynamodb:LeadingKeys": ["a", "b"]})
    assert statement.applies("dynamodb:GetItem", "t", {})
    equals = Statement.parse(
        {"Effect": "Allow", "Action": ["*"], "Resource": ["*"], "Condition": {"StringEquals": {"k": "v"}}}
    )
    assert equals.applies("x:Y", "r", {"k": ["v"]}) and not equals.applies("x:Y", "r", {})
    with pytest.raises(ValueError, match="NumericLessThan"):
        Statement.parse(
            {"Effect": "Allow", "Action": ["*"], "Resource": ["*"], "Condition": {"NumericLessThan": {"k": "1"}}}
        )


# ---- in a worker process ---------------------------------------------------------------


def test_a_worker_process_checks_its_calls_through_its_environment_alone_beside_the_chaos_faults(
    tmp_path: Path,
) -> None:
    """The worker program knows nothing of the check: the environment iam.worker_env writes
    installs it (a sitecustomize first on PYTHONPATH), and that sitecustomize runs the next one
    on the path, so the chaos harness's faults are injected too. A call the worker role does not
    allow fails before anything is sent (no endpoint is even reachable here)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AWS_ENDPOINT_URL")}
    env.update(faults.worker_env(faults.FaultPlan(error_rate=0, latency_rate=0, ambiguous_rate=0), tmp_path / "f"))
    worker = load(local_values(_fake_provisioned(), stream_arn="s", scaler_function="f"))[WORKER]
    env.update(iam.worker_env(worker, tmp_path / "iam", os.pathsep.join([env["PYTHONPATH"], str(ROOT)])))
    probe = (
        "import json; from botocore.exceptions import ClientError; from batchscribe import aws\n"
        "c = aws.client('dynamodb')\n"
        "hooks = [getattr(aws.client, '_chaos', False), getattr(c, '_chaos_hooked', False), c._iam_hooked]\n"
        "try:\n    c.delete_item(TableName='t', Key={'job_id': {'S': 'j'}})\n"
        "except ClientError as e:\n    print(json.dumps([*hooks, e.response['Error']['Code']]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )

    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, True, True, "AccessDeniedException"]
    assert "IAM: denied worker:gpu: dynamodb:DeleteItem on arn:aws:dynamodb:" in out.stderr  # its log
    [checks_file] = (tmp_path / "iam" / "checks").glob("checks-*.json")  # written at exit
    assert json.loads(checks_file.read_text())["denied"][0][:2] == ["worker:gpu", "dynamodb:DeleteItem"]
