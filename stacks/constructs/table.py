"""The jobs table: on demand, TTL, point-in-time recovery, the owner and sweep indexes
(schema from batchscribe.resources, the same the local stack builds), a stream for events."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as ddb
from constructs import Construct

from batchscribe.resources import TABLE_INDEXES, TABLE_KEY, TTL_ATTRIBUTE

_TYPES = {"S": ddb.AttributeType.STRING, "N": ddb.AttributeType.NUMBER}


class JobsTable(Construct):
    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id)
        self.table = ddb.Table(
            self,
            "Jobs",
            partition_key=ddb.Attribute(name=TABLE_KEY, type=ddb.AttributeType.STRING),
            billing_mode=ddb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute=TTL_ATTRIBUTE,
            point_in_time_recovery_specification=ddb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=ddb.TableEncryption.AWS_MANAGED,
            stream=ddb.StreamViewType.NEW_AND_OLD_IMAGES,
            removal_policy=RemovalPolicy.RETAIN,
        )
        for name, (pk, pk_type, sk, sk_type) in TABLE_INDEXES.items():
            self.table.add_global_secondary_index(
                index_name=name,
                partition_key=ddb.Attribute(name=pk, type=_TYPES[pk_type]),
                sort_key=ddb.Attribute(name=sk, type=_TYPES[sk_type]),
                projection_type=ddb.ProjectionType.ALL,
            )
