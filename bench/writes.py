"""DynamoDB write request units (WRU) of one job's life, metered as DynamoDB bills them.

    python -m bench.writes --design after     # meters this tree; records bench/results/writes.json

One job goes through the calls the service's processes make, with the real repository against
moto (in process) and an injected clock: the API's create, the intake's enqueue, the worker's
claim (and its pool's claim counter), a heartbeat every `heartbeat_seconds` for `held` seconds,
and the commit (which frees the owner's running slot: a conditional update that fails, billed
all the same, when no cap ever applied). A botocore hook reads each written item before and after
the write and applies DynamoDB's rules (https://docs.aws.amazon.com/amazondynamodb/latest/
developerguide/GSI.html#GSI.Writes and .../CapacityUnitCalculations.html):

- the table: ceil(max(size before, size after) / 1 KB) per write (a failed condition: the size of
  the item as it was, at least 1); a transaction's items cost twice;
- each global secondary index: nothing when the item is in it neither before nor after, or when
  neither its key nor an attribute it projects changed; ceil(entry size / 1 KB) to put, delete or
  update the entry in place; two writes (delete + put) when its key changed. An entry's size is
  the table key, the index key and the projected attributes.

moto reports no capacity, so these are the rules applied to the items as this code writes them,
not a bill. `bench.cost` turns the per-step figures into WRU per job for any running time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.provenance import ROOT, command, hardware

RESULTS = ROOT / "bench" / "results"
KB = 1024


# ---- DynamoDB's sizes -------------------------------------------------------------------------


def value_size(value: dict[str, Any]) -> int:
    """The bytes DynamoDB counts for one typed attribute value."""
    (kind, v), *_ = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        digits = Decimal(v).normalize().as_tuple().digits
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in v)
    if kind == "NS":
        return sum(value_size({"N": n}) for n in v)
    if kind == "L":
        return 3 + sum(value_size(e) + 1 for e in v)
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(e) + 1 for k, e in v.items())
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_size(item: dict[str, Any] | None) -> int:
    return sum(len(name.encode()) + value_size(v) for name, v in (item or {}).items())


def units(size: int) -> int:
    """Write units of a write of `size` bytes: 1 KB each, at least one."""
    return max(1, math.ceil(size / KB))


@dataclass(frozen=True)
class Index:
    name: str
    keys: tuple[str, ...]  # its partition and sort key
    projected: tuple[str, ...] | None  # non-key attributes it carries; None: every attribute

    def entry(self, item: dict[str, Any] | None, table_key: str) -> dict[str, Any] | None:
        """The item's entry in this index (None: not in it, the index being sparse)."""
        if item is None or any(k not in item for k in self.keys):
            return None
        if self.projected is None:
            return dict(item)
        return {k: v for k, v in item.items() if k in (table_key, *self.keys, *self.projected)}

    def writes(self, before: dict[str, Any] | None, after: dict[str, Any] | None, table_key: str) -> int:
        old, new = self.entry(before, table_key), self.entry(after, table_key)
        if old is None and new is None:
            return 0
        if old is None:
            return units(item_size(new))
        if new is None:
            return units(item_size(old))
        if any(old[k] != new[k] for k in self.keys):
            return units(item_size(old)) + units(item_size(new))
        return 0 if old == new else units(item_size(new))


def table_indexes(projections: str = "declared") -> list[Index]:
    """The jobs table's indexes (batchscribe.resources); `projections="all"`: each carrying every
    attribute (what the CDK table makes until it reads the declared projections)."""
    from batchscribe import resources as r

    declared = getattr(r, "INDEX_ATTRIBUTES", {})
    return [
        Index(name, (pk, sk), None if projections == "all" else declared.get(name))
        for name, (pk, _, sk, _) in r.TABLE_INDEXES.items()
    ]


# ---- the meter ----------------------------------------------------------------------------------


@dataclass
class Write:
    step: str
    operation: str
    table: int
    indexes: dict[str, int]
    failed: bool = False

    @property
    def total(self) -> int:
        return self.table + sum(self.indexes.values())


@dataclass
class WriteMeter:
    """Bills every write made through `client` (the service's cached DynamoDB client) by the
    rules above, reading the items before and after with a client of its own."""

    client: Any
    reader: Any
    table: str
    indexes: list[Index]
    table_key: str = "job_id"
    writes: list[Write] = field(default_factory=list)
    step_name: str = ""

    OPERATIONS = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems")

    def __post_init__(self) -> None:
        for op in self.OPERATIONS:
            self.client.meta.events.register(f"before-parameter-build.dynamodb.{op}", self._before)
            self.client.meta.events.register(f"after-call.dynamodb.{op}", self._after)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.step_name = name
        try:
            yield
        finally:
            self.step_name = ""

    def _keys(self, params: dict[str, Any], model: Any) -> list[dict[str, Any]]:
        if model.name == "TransactWriteItems":
            out = []
            for entry in params["TransactItems"]:
                (kind, body), *_ = entry.items()
                if kind != "ConditionCheck":
                    out.append(body.get("Key") or {self.table_key: body["Item"][self.table_key]})
            return out
        return [params.get("Key") or {self.table_key: params["Item"][self.table_key]}]

    def _read(self, key: dict[str, Any]) -> dict[str, Any] | None:
        item = self.reader.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        return dict(item) if item else None

    def _before(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        keys = self._keys(params, model)
        context["metered"] = [(key, self._read(key)) for key in keys]

    def _after(self, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        factor = 2 if model.name == "TransactWriteItems" else 1
        failed = "Error" in parsed
        for key, before in context.get("metered", []):
            if failed:  # billed for the item as it was; the indexes are untouched
                self.writes.append(Write(self.step_name, model.name, factor * units(item_size(before)), {}, True))
                continue
            after = self._read(key)
            table = factor * units(max(item_size(before), item_size(after)))
            per_index = {i.name: i.writes(before, after, self.table_key) for i in self.indexes}
            self.writes.append(Write(self.step_name, model.name, table, per_index))

    def by_step(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.writes:
            out[w.step] = out.get(w.step, 0) + w.total
        return out


# ---- one job's life ---------------------------------------------------------------------------


OFFLINE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
OWNER = "arn:aws:iam::123456789012:role/transcription-client"
WORKER = "0f5a1b6e-3c2d-4e8f-9a7b-1c2d3e4f5a6b:7"  # a Batch array child's job id
FORMATS = ("txt", "srt", "vtt", "json")


@dataclass(frozen=True)
class Life:
    """A job's life to meter: held `held_s` seconds by a worker beating every `heartbeat_s`."""

    held_s: float = 600.0
    heartbeat_s: float = 5.0
    lease_s: int = 90
    start: float = 1_800_000_000.0


def meter_job(life: Life, projections: str = "declared") -> dict[str, Any]:
    """One job's writes, step by step, on moto with the table as declared (or with every index
    projecting every attribute)."""
    import boto3
    from moto import mock_aws

    from batchscribe import aws, keys
    from batchscribe.api_models import CreateJobRequest
    from batchscribe.jobs import JobApi
    from batchscribe.models import ResultSummary
    from batchscribe.repository import Counters, JobRepository
    from batchscribe.resources import Names
    from batchscribe.settings import ApiSettings
    from batchscribe_cli.provision import provision

    indexes = table_indexes(projections)
    now = [life.start]

    def clock() -> float:
        return now[0]

    os.environ.update(OFFLINE_ENV)  # moto's own credentials; no real account is ever reached
    os.environ.pop("AWS_ENDPOINT_URL", None)
    with mock_aws():
        aws.reset()
        names = Names(prefix="w" + uuid.uuid4().hex[:8])
        p = provision(boto3.Session(region_name="us-east-1"), names)
        ddb = aws.client("dynamodb")
        if projections == "all":
            _recreate_projecting_all(ddb, p.table)
        meter = WriteMeter(ddb, boto3.client("dynamodb", region_name="us-east-1"), p.table, indexes)
        api = JobApi.from_settings(ApiSettings(table_name=p.table, bucket_name=p.bucket), clock=clock)
        repo = JobRepository(p.table, clock=clock)
        with meter.step("create"):
            request = CreateJobRequest(
                filename="board-meeting-2026-11-03.mp3", content_type="audio/mpeg", size_bytes=48_213_772
            )
            created, _ = api.create_job(OWNER, request)
        job_id = created.job_id
        now[0] += 20
        with meter.step("enqueue"):
            repo.enqueue(job_id, 48_213_772, etag='"9b2cf535f27731c974343645a3985328-6"', version_id=None)
        now[0] += 2
        with meter.step("claim"):
            job = repo.claim(job_id, WORKER, life.lease_s)
            Counters(p.table, clock=clock).count_claim(p.jobs_queue_url)
        beats = int(life.held_s // life.heartbeat_s)
        for n in range(beats):
            now[0] += life.heartbeat_s
            with meter.step("heartbeat"):
                repo.heartbeat(job_id, job.attempt, life.lease_s, int(100 * (n + 1) / (beats + 1)))
        now[0] += life.held_s - beats * life.heartbeat_s
        with meter.step("commit"):
            summary = ResultSummary(
                language="en",
                duration_seconds=1800.0,
                outputs={f: keys.output_key(job.owner_key, job_id, f) for f in FORMATS},
                engine="faster-whisper",
                model="large-v3-turbo",
                compute_seconds=41.7,
                real_time_factor=0.0232,
                segments=412,
                cost_usd=0.0034,
            )
            repo.succeed(job_id, job.attempt, summary, keys.log_key(job.owner_key, job_id))
        aws.reset()
    return _summary(meter, life, beats)


def _recreate_projecting_all(ddb: Any, table: str) -> None:
    """The table again, each index carrying every attribute (the CDK table's projection)."""
    from batchscribe_cli.provision import create_table

    ddb.delete_table(TableName=table)
    create_table(ddb, table, attributes={})


def _summary(meter: WriteMeter, life: Life, beats: int) -> dict[str, Any]:
    steps = meter.by_step()
    heartbeats = [w.total for w in meter.writes if w.step == "heartbeat"]
    distinct = sorted(set(heartbeats))
    return {
        "life": {"held_s": life.held_s, "heartbeat_s": life.heartbeat_s, "lease_s": life.lease_s, "beats": beats},
        "wru_by_step": steps,
        "wru_per_job": sum(steps.values()),
        "heartbeat_wru": {str(v): heartbeats.count(v) for v in distinct},
        "writes": [
            {"step": w.step, "op": w.operation, "table": w.table, "indexes": w.indexes, "failed": w.failed}
            for w in meter.writes
            if w.step != "heartbeat"
        ],
        "index_writes_by_step": _index_writes(meter),
    }


def _index_writes(meter: WriteMeter) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for w in meter.writes:
        step = out.setdefault(w.step, {"table": 0})
        step["table"] += w.table
        for name, n in w.indexes.items():
            step[name] = step.get(name, 0) + n
    return out


def _commit() -> str:
    """The commit this tree is at (what a design's figures were metered on)."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--design", required=True, help="the name this tree's figures are recorded under")
    parser.add_argument("--note", default="", help="what the design is, in a line")
    parser.add_argument("--held", type=float, default=600.0, help="seconds the worker holds the job")
    parser.add_argument("--out", type=Path, default=RESULTS / "writes.json")
    args = parser.parse_args(argv)
    life = Life(held_s=args.held)
    rows = {p: meter_job(life, p) for p in ("declared", "all")}
    data = json.loads(args.out.read_text()) if args.out.exists() else {"designs": {}}
    data["designs"][args.design] = {
        "note": args.note,
        "commit": _commit(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command(),
        "machine": hardware(),
        "projections": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    for p, row in rows.items():
        print(
            f"{args.design} ({p} projections): {row['wru_per_job']} WRU per job held {args.held:g} s; "
            f"by step and index: {row['index_writes_by_step']}"
        )


if __name__ == "__main__":
    main()
