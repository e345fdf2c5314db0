"""The whole pipeline on one machine: `batchscribe local up`. The deployed stack with each AWS
part replaced by one stand-in module, composed by `stack.LocalStack`:

- `motoserver`: moto in server mode on 127.0.0.1 for S3, SQS, DynamoDB (and its stream) and
  EventBridge, provisioned (`batchscribe_cli.provision`) from the same declarations the CDK stack
  reads, and what keeps its memory flat for hours (moto's references to every object it made,
  its stream records, malloc arenas);
- `handlers`: every Lambda through its real handler, in this process, one event at a time, with
  one environment written from each one's settings model (`config`);
- `gateway`: an HTTP server that turns requests into API Gateway proxy events for the API
  handler (header `X-Batchscribe-Owner` stands in for the IAM caller);
- `event_sources`: the uploads queue -> on_upload, the jobs DLQs -> dead_letter, the webhooks
  queue -> webhook, the jobs table's stream -> notify (which puts "Job Status Change" on moto's
  default bus and queues callbacks), the scaler and the sweeper on their schedules;
- `batch`: the Batch stand-in behind the scaler's Compute interface: worker processes (the real
  worker program on CPU, or its image under podman) that exit when idle, so scale-from-zero and
  back is visible; a worker that ends -> the reconciler (Batch's job state change event);
- `iam` (with `policies`, `requests`): IAM, enforced on the caller's side: each component's AWS
  calls (each handler's, each worker's, each presigned URL) checked against the policy the CDK
  stack synthesizes for its role (policies.json, written by `make policies`);
- `snapshot`: the emulated state kept in the data folder, so stopping the stack loses no job;
- `datadir`: the data folder (one per user by default), its lock (one stack per folder) and
  `endpoint.json`, where the running stack says where its API is;
- `lambda_events`: the events and context Lambda hands a handler (the tests build theirs here);
- `transitions`: the terminal's "job …: queued → running" lines, read from the stream.
"""

from batchscribe_cli.local.batch import REPO_ROOT, LocalCompute
from batchscribe_cli.local.config import LocalConfig
from batchscribe_cli.local.handlers import IN_PROCESS, merged_env, one_at_a_time
from batchscribe_cli.local.lambda_events import (
    LOCAL_ACCOUNT,
    LOCAL_REGION,
    LocalContext,
    json_request,
    owner_arn,
    proxy_event,
    sqs_event,
    stream_event,
)
from batchscribe_cli.local.motoserver import limit_malloc_arenas
from batchscribe_cli.local.snapshot import Snapshot
from batchscribe_cli.local.stack import LocalStack

__all__ = [
    "IN_PROCESS",
    "LOCAL_ACCOUNT",
    "LOCAL_REGION",
    "REPO_ROOT",
    "LocalCompute",
    "LocalConfig",
    "LocalContext",
    "LocalStack",
    "Snapshot",
    "json_request",
    "limit_malloc_arenas",
    "merged_env",
    "one_at_a_time",
    "owner_arn",
    "proxy_event",
    "sqs_event",
    "stream_event",
]
