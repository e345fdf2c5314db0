"""checkov (bridgecrew) on the synthesized template: every finding this stack keeps is
acknowledged here, on the resource it concerns, with why. The acknowledgement is CloudFormation
metadata that checkov reads (`Metadata: {checkov: {skip: [{id, comment}]}}`), written by one
aspect, and only where its reason holds for that resource (a queue is acknowledged for SQS
encryption only if SQS-managed SSE is on; a function for a dead-letter queue only if the way it
is invoked is one the reason names). Nothing is skipped for the whole template.

What checkov found and was fixed instead of acknowledged: every log group is encrypted with a
customer-managed key (stacks/constructs/logs.py); the console's distribution logs every viewer
request, serves TLS 1.2+ on a domain of its own, and caches nothing, so its file deployment needs
no CloudFront invalidation (no write action on `*`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import jsii
from aws_cdk import CfnResource, IAspect, Stack
from aws_cdk import aws_dynamodb as ddb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import IConstruct

from stacks.constructs.console import Console

NOTIFICATIONS_HANDLER = "BucketNotificationsHandler"  # CDK's own function behind S3 event notifications
DEPLOYMENT_HANDLER = "Custom::CDKBucketDeployment"  # CDK's own function that copies the console's files


def _handler(resource: CfnResource) -> str | None:
    """The process a function runs (`api`, `scaler`, ...), or CDK's notifications handler."""
    if isinstance(resource, lambda_.CfnFunction) and (resource.handler or "").startswith("lambdas."):
        return str(resource.handler).split(".")[1]
    for cdk_handler in (NOTIFICATIONS_HANDLER, DEPLOYMENT_HANDLER):
        if cdk_handler in resource.node.path:
            return cdk_handler
    return None


def _default_certificate(resource: CfnResource) -> bool:
    """The console's distribution, served on CloudFront's own *.cloudfront.net certificate."""
    console = resource.node.scope.node.scope if resource.node.scope else None  # Console/Distribution/Resource
    return isinstance(console, Console) and console.certificate is None


def _bucket(resource: CfnResource) -> str:
    return resource.node.path.split("/")[-2]  # .../Jobs/<Media|AccessLogs>/Resource


# How each function is invoked, and why that needs no dead-letter queue of its own (CKV_AWS_116)
NO_DLQ = {
    "api": "invoked synchronously by API Gateway: the caller gets the error, no event is left to keep",
    "on_upload": "consumes the uploads queue: a failed message returns to it and goes to its DLQ",
    "dead_letter": "consumes the job DLQs: a failed message stays there, alarmed (<stack>-*DeadLetters)",
    "webhook": "consumes the webhooks queue: a failed message returns to it and goes to its DLQ",
    "notify": "reads the table's stream: a failed batch goes to the Failures queue (the source's on-failure)",
    "scaler": "runs every minute: what a failed run missed is the next run's work, nothing to replay",
    "sweeper": "runs every minute: what a failed run missed is the next run's work, nothing to replay",
    "reconciler": "EventBridge retries it; jobs of a worker it still missed are requeued by the sweeper (lease)",
    NOTIFICATIONS_HANDLER: "CDK's bucket-notifications handler, called synchronously by CloudFormation at deploy",
    DEPLOYMENT_HANDLER: "CDK's bucket-deployment handler (the console's files), called synchronously by "
    "CloudFormation at deploy: a failure fails the deploy",
}
VERSIONING = {
    "Media": "uploads/ and outputs/ expire by lifecycle rule and are deleted on purpose (a rejected upload, "
    "the outputs of a job cancelled as it committed): versions would keep what is meant to be gone",
    "AccessLogs": "access logs are written once and expire after 90 days: there is nothing to restore",
}


@dataclass(frozen=True)
class Acknowledged:
    check: str
    resource_type: str
    reason: Callable[[CfnResource], str | None]  # why, for this resource; None: it does not hold here


def _always(reason: str) -> Callable[[CfnResource], str | None]:
    return lambda _resource: reason


ACKNOWLEDGED: tuple[Acknowledged, ...] = (
    Acknowledged(
        "CKV_AWS_27",
        "AWS::SQS::Queue",
        lambda q: (
            "Encrypted at rest with SQS-managed keys (SqsManagedSseEnabled), which checkov does not count: S3 "
            "cannot send event notifications to a queue under the AWS-managed aws/sqs key, and a customer key "
            "adds a KMS call per message."
            if isinstance(q, sqs.CfnQueue) and q.sqs_managed_sse_enabled is True
            else None
        ),
    ),
    Acknowledged(
        "CKV_AWS_115",
        "AWS::Lambda::Function",
        lambda f: (
            "No reserved concurrency by default: a new account's quota (10) cannot spare reservations and the "
            "deploy would fail; `reserve_concurrency` reserves one each for the scaler and the sweeper, and "
            "every function's throttles are alarmed (<stack>-<Function>Throttles)."
            if _handler(f) is not None
            else None
        ),
    ),
    Acknowledged(
        "CKV_AWS_116",
        "AWS::Lambda::Function",
        lambda f: f"No DLQ needed: {NO_DLQ[h]}." if (h := _handler(f)) in NO_DLQ else None,
    ),
    Acknowledged(
        "CKV_AWS_117",
        "AWS::Lambda::Function",
        _always(
            "Calls only AWS service endpoints and (the webhook sender) public callback URLs; there is no private "
            "resource to reach. Inside a VPC it would need a NAT gateway or interface endpoints: a standing cost."
        ),
    ),
    Acknowledged(
        "CKV_AWS_173",
        "AWS::Lambda::Function",
        lambda f: (
            "The environment holds resource names, queue URLs and limits, no secret (the webhook signing secret "
            "is read from Secrets Manager at run time); Lambda encrypts it at rest with its service key."
            if isinstance(f, lambda_.CfnFunction) and f.environment is not None
            else None
        ),
    ),
    Acknowledged(
        "CKV_AWS_119",
        "AWS::DynamoDB::Table",
        lambda t: (
            "Encrypted at rest with the AWS-managed key (aws/dynamodb). A customer key would add kms:Decrypt to "
            "every role that reads the table or its stream, whose access the table grants already limit."
            if isinstance(t, ddb.CfnTable) and (Stack.of(t).resolve(t.sse_specification) or {}).get("sseEnabled")
            else None
        ),
    ),
    Acknowledged(
        "CKV_AWS_149",
        "AWS::SecretsManager::Secret",
        _always(
            "Encrypted with the AWS-managed aws/secretsmanager key; only the webhook function's role may read "
            "the secret (grant_read), and receivers hold their own copy to verify callbacks."
        ),
    ),
    Acknowledged(
        "CKV_AWS_120",
        "AWS::ApiGateway::Stage",
        _always(
            "Answers are per caller and change with a job's state (status, progress, fresh presigned URLs): a "
            "stage cache would serve stale or another caller's answers, and it is billed by the hour."
        ),
    ),
    Acknowledged(
        "CKV_AWS_18",
        "AWS::S3::Bucket",
        lambda b: (
            "This is the access-log bucket: the media and console buckets and the console's distribution log "
            "into it; logging it into itself would loop."
            if _bucket(b) == "AccessLogs"
            else None
        ),
    ),
    Acknowledged(
        "CKV_AWS_68",
        "AWS::CloudFront::Distribution",
        _always(
            "The console's distribution serves only static files (no origin logic to attack) and every API call "
            "is SigV4-signed and throttled at API Gateway; a WAF web ACL bills per month, rule and request. "
            "Attach one where a deployment wants it."
        ),
    ),
    Acknowledged(
        "CKV_AWS_174",
        "AWS::CloudFront::Distribution",
        lambda d: (
            "Served on CloudFront's own *.cloudfront.net certificate, whose security policy CloudFront fixes at "
            "TLSv1 (checkov fails the default certificate whatever the policy). Set console_domain_name and "
            "console_certificate_arn to serve the console on its own name with TLSv1.2_2021."
            if _default_certificate(d)
            else None
        ),
    ),
    Acknowledged(
        "CKV_AWS_21",
        "AWS::S3::Bucket",
        lambda b: f"No versioning: {VERSIONING[name]}." if (name := _bucket(b)) in VERSIONING else None,
    ),
)


def skips(resource: CfnResource) -> list[dict[str, str]]:
    """The acknowledgements that hold for one resource, in checkov's metadata form."""
    out = []
    for ack in ACKNOWLEDGED:
        if ack.resource_type == resource.cfn_resource_type and (reason := ack.reason(resource)):
            out.append({"id": ack.check, "comment": reason})
    return out


@jsii.implements(IAspect)
class CheckovAcknowledgements:
    """Writes each resource's acknowledgements into its metadata at synth (after every construct,
    CDK's own included, exists)."""

    def visit(self, node: IConstruct) -> None:
        if CfnResource.is_cfn_resource(node):
            resource = cast(CfnResource, node)
            if found := skips(resource):
                resource.add_metadata("checkov", {"skip": found})
