"""AWS's APIs on this machine: moto in server mode on 127.0.0.1 (S3, SQS, DynamoDB and its
stream, EventBridge), in this process, with its writes made atomic (`moto_atomic`), and what
keeps its memory flat in a process that runs for hours: the references moto keeps to every
object it made, the stream records it keeps forever, and malloc arenas."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

from batchscribe_cli import moto_atomic
from batchscribe_cli.local.lambda_events import LOCAL_REGION


class MotoServer:
    """moto's server, on the port it had last time when that is free (so links handed out
    before a restart still work), remembered in the state folder."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.endpoint = ""
        self._server: Any = None

    def start(self) -> dict[str, str]:
        """Start it empty; the AWS environment that points clients at it."""
        import requests
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
        limit_malloc_arenas()  # before the servers' threads start
        moto_atomic.apply()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self._last_port(), verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        # moto's backends are per process, not per server: a stack started again in the same
        # process (tests, benchmarks) begins empty
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=30).raise_for_status()
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "endpoint.json").write_text(json.dumps({"moto_port": port}))
        return self.aws_env()

    def aws_env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_SESSION_TOKEN": "local",
            "AWS_DEFAULT_REGION": LOCAL_REGION,
            "AWS_REGION": LOCAL_REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _last_port(self) -> int:
        try:
            port = int(json.loads((self.state / "endpoint.json").read_text())["moto_port"])
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as moto's server binds
                sock.bind(("127.0.0.1", port))
            return port
        except (OSError, ValueError, KeyError):
            return 0


def forget_model_instances() -> None:
    """moto keeps a reference to every model object it ever made, for its dashboard
    (`moto.core.model_instances`): each DynamoDB item a GetItem, Query or Scan copied, each
    SQS message, each S3 key version, each stream record. In a process that runs for hours that
    is the whole growth of its memory (measured: ~1.5 MB/s with a 0.3 s scan of 200 jobs).
    Nothing here reads the dashboard, so drop those references; live objects stay referenced
    by their backends."""
    from moto.core.model_instances import model_data

    for models in list(model_data.values()):
        for model in list(models.values()):
            del model.instances_tracked[:]


def forget_read_stream_records(next_iterator: str) -> int:
    """moto keeps every record of a table's stream, both images of every write, and every shard
    iterator it handed out (each GetRecords makes one), for the life of the process. Once the
    one reader of the stream holds `next_iterator`, what it read is dropped, as DynamoDB's
    trim horizon would after 24 h, and so are the shard's other iterators. Returns the records
    dropped. Sequence numbers go on unchanged: moto numbers a record from the shard's start
    plus its records, so the start moves by what is dropped, under the lock each write (and so
    each append to the stream) takes."""
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    # arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL|1|ID
    _, _, _, region, account = next_iterator.split(":", 5)[:5]
    backend = dynamodbstreams_backends[account][region]
    kept = backend.shard_iterators.get(next_iterator)
    if kept is None:
        return 0
    shard = kept.stream_shard
    with moto_atomic.item_writes():
        read = max(0, min(kept.sequence_number - shard.starting_sequence_number, len(shard.items)))
        del shard.items[:read]
        shard.starting_sequence_number += read
    for arn, iterator in list(backend.shard_iterators.items()):
        if iterator.stream_shard is shard and iterator is not kept:
            backend.shard_iterators.pop(arn, None)
    return read


def limit_malloc_arenas(count: int = 2) -> bool:
    """glibc gives threads that allocate their own malloc arenas (up to 8 per core) and hands
    little of what is freed in them back to the system, so a process that serves each request
    on a new thread (moto's server, the API's HTTP server) creeps up in resident memory while
    its Python heap stays flat (measured here: +2.9 MB/min at a job a second; flat with two
    arenas). What MALLOC_ARENA_MAX does when set before start; a no-op off glibc."""
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-8, count))  # M_ARENA_MAX
    except (OSError, AttributeError):
        return False
