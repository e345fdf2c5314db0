"""Jobs: where a job lives. The jobs table (records, the owner and sweep indexes, a stream
for status events) and the media bucket (uploads/ in, outputs/ out). The grant helpers say
what each kind of process may do with them; the constructs that own the processes call them.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as ddb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from batchscribe.keys import OUTPUTS_PREFIX, UPLOADS_PREFIX
from batchscribe.resources import (
    BUCKET_CORS_ALLOW_HEADERS,
    BUCKET_CORS_EXPOSE_HEADERS,
    BUCKET_CORS_MAX_AGE_SECONDS,
    BUCKET_CORS_METHODS,
    STATS_ITEM_PREFIX,
    TABLE_INDEXES,
    TABLE_KEY,
    TTL_ATTRIBUTE,
)
from stacks.config import DeploymentConfig

_TYPES = {"S": ddb.AttributeType.STRING, "N": ddb.AttributeType.NUMBER}
READ_TRANSITION = ("dynamodb:GetItem", "dynamodb:UpdateItem")  # one job: read it, move it
READ_TRANSITION_QUERY = (*READ_TRANSITION, "dynamodb:Query")  # ... and find jobs by index
CREATE = (*READ_TRANSITION_QUERY, "dynamodb:PutItem")


def _cors(*origins: str) -> dict[str, Any]:
    """The media bucket's CORS rule for browser origins (the core's methods and exposed headers)."""
    return {
        "allowed_methods": [s3.HttpMethods(m) for m in BUCKET_CORS_METHODS],
        "allowed_origins": list(origins),
        "allowed_headers": list(BUCKET_CORS_ALLOW_HEADERS),
        "exposed_headers": list(BUCKET_CORS_EXPOSE_HEADERS),
        "max_age": BUCKET_CORS_MAX_AGE_SECONDS,
    }


class Jobs(Construct):
    def __init__(self, scope: Construct, id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, id)
        self.table = self._table()
        self.access_logs = self._bucket(
            "AccessLogs",
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90))],
        )
        self.bucket = self._media(config)

    def _table(self) -> ddb.Table:
        """Job records: on demand, TTL, point-in-time recovery, a stream for status events, and
        the indexes (listing by owner, the sweep)."""
        table = ddb.Table(
            self,
            "Table",
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
            table.add_global_secondary_index(
                index_name=name,
                partition_key=ddb.Attribute(name=pk, type=_TYPES[pk_type]),
                sort_key=ddb.Attribute(name=sk, type=_TYPES[sk_type]),
                projection_type=ddb.ProjectionType.ALL,
            )
        return table

    def _media(self, config: DeploymentConfig) -> s3.Bucket:
        """uploads/ in (kept `upload_retention_days`), outputs/ out (`output_retention_days`);
        browsers may POST uploads and GET results; access logged."""
        return self._bucket(
            "Media",
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,  # ACLs off
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="media/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="uploads",
                    prefix=UPLOADS_PREFIX,
                    expiration=Duration.days(config.upload_retention_days),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="outputs", prefix=OUTPUTS_PREFIX, expiration=Duration.days(config.output_retention_days)
                ),
            ],
            cors=[s3.CorsRule(**_cors(*config.cors_origins))],
        )

    def allow_origin(self, origin: str) -> None:
        """One more browser origin (the web console's) that may upload to and read from the bucket."""
        self.bucket.add_cors_rule(**_cors(origin))

    def _bucket(self, id: str, **props: Any) -> s3.Bucket:
        """A private bucket: public access blocked, encrypted at rest, TLS only, kept on stack deletion."""
        return s3.Bucket(
            self,
            id,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            removal_policy=RemovalPolicy.RETAIN,
            **props,
        )

    @property
    def store(self) -> dict[str, str]:
        """The StoreSettings fields every job-handling process is configured with."""
        return {"table_name": self.table.table_name, "bucket_name": self.bucket.bucket_name}

    def grant_table(self, grantee: iam.IGrantable, actions: tuple[str, ...]) -> None:
        self.table.grant(grantee, *actions)

    def grant_api(self, grantee: iam.IGrantable) -> None:
        """Create, read, list and cancel jobs (and read the per-minute claim counters of the
        queue estimates in one batch); sign upload POSTs, result GETs and the owner's GET of
        their own upload (the web console plays it back)."""
        self.grant_table(grantee, (*CREATE, "dynamodb:BatchGetItem"))
        self.bucket.grant_put(grantee, f"{UPLOADS_PREFIX}*")  # with multipart: create, sign parts, complete, abort
        self.bucket.grant_read(grantee, f"{OUTPUTS_PREFIX}*")
        self.bucket.grant_read(grantee, f"{UPLOADS_PREFIX}*")
        grantee.grant_principal.add_to_principal_policy(  # resume: which parts S3 already holds
            iam.PolicyStatement(
                actions=["s3:ListMultipartUploadParts"], resources=[self.bucket.arn_for_objects(f"{UPLOADS_PREFIX}*")]
            )
        )

    def grant_stats_counters(self, grantee: iam.IGrantable) -> None:
        """ADD to the operator's hourly counter items (`stats#<hour>`) and no other item."""
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["dynamodb:UpdateItem"],
                resources=[self.table.table_arn],
                conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{STATS_ITEM_PREFIX}*"]}},
            )
        )

    def grant_worker(self, grantee: iam.IGrantable) -> None:
        """Claim and move jobs; read inputs; write (and on a lost cancel race, remove) outputs."""
        self.grant_table(grantee, READ_TRANSITION_QUERY)
        self.bucket.grant_read(grantee, f"{UPLOADS_PREFIX}*")
        self.bucket.grant_read_write(grantee, f"{OUTPUTS_PREFIX}*")
        self.bucket.grant_delete(grantee, f"{OUTPUTS_PREFIX}*")
