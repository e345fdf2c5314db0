"""Log groups: every one the stack makes (functions, workers, API access, VPC flow logs) is
encrypted with one customer-managed key, kept for the configured retention, and removed with
the stack. The key lives once at the stack's root; CloudWatch Logs of this account and region
may use it for its log groups only (the AWS-documented key policy)."""

from __future__ import annotations

from typing import cast

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

KEY_ID = "LogsKey"

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


def logs_key(scope: Construct) -> kms.Key:
    """The stack's one key for log groups, made on first use."""
    stack = Stack.of(scope)
    existing = stack.node.try_find_child(KEY_ID)
    if existing is not None:
        return cast(kms.Key, existing)
    key = kms.Key(
        stack,
        KEY_ID,
        description="Batchscribe log groups: CloudWatch Logs encrypts them with it",
        enable_key_rotation=True,
        removal_policy=RemovalPolicy.DESTROY,
    )
    key.add_to_resource_policy(
        iam.PolicyStatement(
            sid="CloudWatchLogsEncrypt",
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
            resources=["*"],  # in a key policy, "*" is this key
            conditions={
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": (
                        f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*"
                    )
                }
            },
        )
    )
    return key


def log_group(scope: Construct, id: str, days: int) -> logs.LogGroup:
    """An encrypted log group kept `days` (rounded up to a CloudWatch retention)."""
    return logs.LogGroup(
        scope,
        id,
        retention=retention(days),
        encryption_key=logs_key(scope),
        removal_policy=RemovalPolicy.DESTROY,
    )
