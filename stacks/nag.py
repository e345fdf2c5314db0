"""cdk-nag AwsSolutions: every finding this stack keeps is acknowledged here, with why.
(cdk-nag 3.x reports through CDK's validation plugins; an IAM4/IAM5 finding is one per
detail, so each detail is acknowledged on its own.)"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from aws_cdk import Acknowledgment, CfnElement, Validations
from constructs import Construct

from stacks.constructs.api import INVOKE_PATHS

if TYPE_CHECKING:
    from stacks.batchscribe_stack import BatchscribeStack


def _logical_id(stack: BatchscribeStack, construct: Construct) -> str:
    return str(stack.resolve(stack.get_logical_id(cast(CfnElement, construct.node.default_child))))


def acknowledge(stack: BatchscribeStack) -> None:
    table = _logical_id(stack, stack.jobs.table)
    bucket = _logical_id(stack, stack.jobs.bucket)
    scaler = _logical_id(stack, stack.scaling.function)
    api = _logical_id(stack, stack.api.api)
    stage = _logical_id(stack, stack.api.api.deployment_stage)
    account = stack.config.account or "<AWS::AccountId>"
    invoke = f"arn:<AWS::Partition>:execute-api:{stack.config.region}:{account}:<{api}>/<{stage}>/*"
    details = {
        **ACKNOWLEDGED,
        f"IAM5[Resource::<{table}.Arn>/index/*]": "Queries go to the table's two GSIs (listing by owner, the "
        "sweep index); CDK's table grant names them as index/*, scoped to this one table.",
        f"IAM5[Resource::<{bucket}.Arn>/uploads/*]": "Access is scoped to the uploads/ prefix; object keys are "
        "per job and made by the server, so no narrower static resource exists.",
        f"IAM5[Resource::<{bucket}.Arn>/outputs/*]": "Access is scoped to the outputs/ prefix; object keys are "
        "per job and made by the server, so no narrower static resource exists.",
        f"IAM5[Resource::<{scaler}.Arn>:*]": "on_upload and the API (a source-URL job) invoke the "
        "scaler function (any of its versions); "
        "CDK's grant_invoke adds the version wildcard of this one function.",
        f"IAM5[Resource::arn:<AWS::Partition>:batch:{stack.config.region}:{account}:job/*]": "The scaler "
        "cancels workers of its own stuck RUNNABLE on Spot (to start them on the on-demand queue); Batch job ARNs "
        "carry the job's id, known only once submitted, so the grant names every job of this account and region.",
        **{
            f"IAM5[Resource::{invoke}{path}]": f"The invoke policy (output InvokePolicyArn) lets a caller use every "
            f"method of {path} on this one API's stage: the API authorizes each job by its owner, not by route; the "
            "operator's statistics route is not among these paths (its own policy, output StatsPolicyArn)."
            for path in INVOKE_PATHS
        },
    }
    if stack.console is not None:
        details.update(_console(stack))
    for rule, reason in details.items():
        Validations.of(stack).acknowledge(Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=reason))


def _console(stack: BatchscribeStack) -> dict[str, str]:
    """The web console's findings (stacks/constructs/console.py), each with why."""
    assert stack.console is not None
    site = _logical_id(stack, stack.console.bucket)
    assets = f"arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-{stack.config.region}/*"
    details = {
        f"IAM5[Resource::<{site}.Arn>/*]": "CDK's BucketDeployment copies the console's built files into "
        "this one site bucket (any of its keys: it replaces the whole site on each deploy).",
        f"IAM5[Resource::{assets}]": "CDK's BucketDeployment reads the console's files from the CDK "
        "bootstrap's asset bucket, where `cdk deploy` uploaded them; asset keys are content hashes.",
        "CFR1": "The console is a sign-in page and static files for the people an operator added; nothing "
        "in it is restricted by country. Add a geo restriction to the distribution where a deployment must.",
        "CFR2": "The distribution serves only static files (no origin logic to attack); every API call is "
        "SigV4-signed and throttled at API Gateway. A WAF web ACL can be attached where a deployment wants one.",
        "COG8": "The Plus feature plan (threat protection) is billed per monthly active user; sign-up is "
        "closed (an operator adds people), passwords are strong and a TOTP second factor is required.",
    }
    if stack.config.console_certificate_arn is None:
        details["CFR4"] = (
            "The distribution uses CloudFront's default *.cloudfront.net certificate, whose policy CloudFront "
            "fixes at TLSv1; console_domain_name with console_certificate_arn serves it with TLSv1.2_2021."
        )
    return details


ACKNOWLEDGED: dict[str, str] = {
    "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]": (
        "The AWS-managed basic execution policy only lets a function write its own CloudWatch logs."
    ),
    "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role]": (
        "AWS Batch's ECS container instances need this managed role to join their cluster; it is what AWS "
        "documents for Batch compute environments."
    ),
    "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]": (
        "API Gateway's account-level role for writing execution and access logs; the managed policy is the "
        "documented one."
    ),
    "IAM5[Action::s3:GetBucket*]": "From CDK's grant_read on one prefix of one bucket (HeadObject, presigned GET).",
    "IAM5[Action::s3:GetObject*]": "From CDK's grant_read on one prefix of one bucket (HeadObject, presigned GET).",
    "IAM5[Action::s3:List*]": "From CDK's grant_read on one prefix of one bucket.",
    "IAM5[Action::s3:Abort*]": "From CDK's grant_put/grant_write: aborting multipart uploads on one prefix.",
    "IAM5[Action::s3:DeleteObject*]": (
        "From CDK's grant_delete on one prefix: on_upload deletes rejected uploads, the worker removes outputs "
        "of a job cancelled while it committed."
    ),
    "IAM5[Resource::*]": (
        "Only actions without resource-level permissions: X-Ray PutTraceSegments/PutTelemetryRecords, "
        "batch:ListJobs and batch:DescribeJobs, and ecr:GetAuthorizationToken for the workers' image pull."
    ),
    "L1": (
        "Python 3.12 is pinned on purpose: it matches the AWS-managed Powertools layer build "
        "(python312-arm64) the functions load and the runtime the tests cover."
    ),
    "SMG4": (
        "The webhook signing secret is shared with the receivers that verify callbacks: an automatic "
        "rotation would break them without warning. Rotate it by hand (docs/deploy.md: Webhooks) when "
        "receivers can follow."
    ),
    "SQS3": "Notify's Failures queue is itself the dead-letter destination of the table stream's event source.",
    "APIG3": (
        "Every method requires SigV4 (IAM) and the stage is throttled; a WAF web ACL adds cost and can be "
        "attached to the stage by operators who expose the API more widely."
    ),
    "COG4": "Methods are authorized with IAM (SigV4) rather than a Cognito user pool, by design.",
}
