"""DynamoDB repository for jobs: the only code that reads or writes the jobs table.

Every state change is one conditional UpdateItem built from `state_machine.TRANSITIONS`.
Writes by a worker are also conditioned on `attempt` (the fencing token), so a worker that
lost its lease can never overwrite a newer attempt. `ConditionalCheckFailedException` is
translated into domain errors (JobNotFound, StaleAttempt, InvalidTransition) using the
item's old image, never the message text.

Table layout (one table):
- key `job_id`; job items carry `owner`, `created_at` (GSI `by_owner`, newest first);
- while a job can go stale it carries `sweep_status` + `sweep_at` (sparse GSI `by_sweep`):
  pending jobs until their upload window closes, running jobs until their lease expires,
  queued jobs from the time their wait started (pushed later by each redrive: the sweeper
  re-sends the message of a job queued too long, see `Lifecycle.sweep`);
- idempotency records `idem#<hash>` point at the job a keyed create made (no `owner`, so
  they stay out of the listing index), with a TTL;
- running-slot items `slots#<owner key>` while an owner's running jobs are capped: the set of
  its running job ids (`jobs`), added at claim in one transaction with the claim (condition:
  fewer than the cap, or this job already in it) and removed at every exit from running
  (succeed, fail, cancel, give back, requeue); in the sparse sweep index as `slots`, so the
  sweeper drops ids whose job is no longer running (an exit that crashed between its writes);
- create-rate counters `rate#<owner hash>#<window>`: one per owner per fixed window, counted
  with a conditional ADD (exact under concurrency), with a TTL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from aws_lambda_powertools import Logger
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from batchscribe import aws
from batchscribe.errors import (
    BadRequest,
    IdempotencyConflict,
    InvalidTransition,
    JobAlreadyExists,
    JobNotFound,
    OwnerAtCap,
    RateLimited,
    StaleAttempt,
)
from batchscribe.keys import is_job_id
from batchscribe.models import DEFAULT_PRIORITY, Callback, ErrorInfo, Job, JobStatus, Priority, ResultSummary, iso
from batchscribe.resources import OWNER_INDEX, SWEEP_INDEX
from batchscribe.state_machine import Transition, sources, target

IDEMPOTENCY_TTL_SECONDS = 24 * 3600
logger = Logger(service="batchscribe", child=True)
SLOTS_SWEEP_STATUS = "slots"  # the running-slot items' partition in the sweep index
_INTERNAL = ("sweep_status", "sweep_at")

_ser = TypeSerializer()
_de = TypeDeserializer()


def _to_dynamo(value: Any) -> Any:
    # DynamoDB numbers must be Decimal; a JSON round trip converts every float at once.
    return json.loads(json.dumps(value), parse_float=Decimal)


def _serialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in _to_dynamo(item).items() if v is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _deserialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_de.deserialize(v)) for k, v in item.items()}


def _job(item: dict[str, Any]) -> Job:
    data = _deserialize(item)
    for name in _INTERNAL:
        data.pop(name, None)
    return Job.model_validate(data)


def job_from_image(image: dict[str, Any] | None) -> Job | None:
    """The job in a DynamoDB stream image (typed attribute values), or None for what is not
    a job: idempotency records, deletions."""
    if not image or "owner" not in image:
        return None
    return _job(image)


class JobRepository:
    def __init__(self, table_name: str, clock: Callable[[], float] = time.time) -> None:
        self.table_name = table_name
        self.clock = clock

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    # ---- reads -------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        if not is_job_id(job_id):
            raise JobNotFound(f"job {job_id!r} not found")
        resp = self._db.get_item(TableName=self.table_name, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
        if "Item" not in resp or "owner" not in resp["Item"]:
            raise JobNotFound(f"job {job_id!r} not found")
        return _job(resp["Item"])

    def get_for_owner(self, job_id: str, owner: str) -> Job:
        """The job, or JobNotFound when it is missing *or* someone else's: the two look alike."""
        job = self.get(job_id)
        if job.owner != owner:
            raise JobNotFound(f"job {job_id!r} not found")
        return job

    def list_for_owner(
        self,
        owner: str,
        *,
        status: JobStatus | None = None,
        priority: Priority | None = None,
        limit: int = 20,
        next_token: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """The owner's jobs, newest first. `next_token` is opaque to clients."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "#o = :o",
            "ExpressionAttributeNames": {"#o": "owner"},
            "ExpressionAttributeValues": {":o": {"S": owner}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        filters = []
        if status is not None:
            filters.append("#s = :s")
            kwargs["ExpressionAttributeNames"]["#s"] = "status"
            kwargs["ExpressionAttributeValues"][":s"] = {"S": status.value}
        if priority is not None:
            # records from before priorities carry none: they are `normal`
            filters.append("(#p = :p OR attribute_not_exists(#p))" if priority == DEFAULT_PRIORITY else "#p = :p")
            kwargs["ExpressionAttributeNames"]["#p"] = "priority"
            kwargs["ExpressionAttributeValues"][":p"] = {"S": priority}
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        if next_token:
            kwargs["ExclusiveStartKey"] = self._decode_token(next_token, owner)
        jobs: list[Job] = []
        # A status or priority filter is applied after each page is read, so read pages until the page
        # is full; bounded, so a sparse filter costs at most a few reads per call.
        for _ in range(10):
            resp = self._db.query(**kwargs)
            jobs.extend(_job(item) for item in resp.get("Items", []))
            last = resp.get("LastEvaluatedKey")
            if len(jobs) >= limit or not last:
                break
            kwargs["ExclusiveStartKey"] = last
        if len(jobs) > limit:
            jobs = jobs[:limit]
            return jobs, self._encode_token(jobs[-1].job_id, jobs[-1].created_at)
        if last:
            plain = _deserialize(last)
            return jobs, self._encode_token(plain["job_id"], plain["created_at"])
        return jobs, None

    @staticmethod
    def _encode_token(job_id: str, created_at: str) -> str:
        """The position after (job_id, created_at); the owner is the caller's, never in the token."""
        raw = json.dumps({"j": job_id, "c": created_at}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _decode_token(token: str, owner: str) -> dict[str, Any]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            job_id, created_at = data["j"], data["c"]
            if not (isinstance(job_id, str) and is_job_id(job_id) and isinstance(created_at, str)):
                raise ValueError(token)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise BadRequest("next_token is not a token this API issued", code="invalid_next_token") from exc
        return {"job_id": {"S": job_id}, "owner": {"S": owner}, "created_at": {"S": created_at}}

    def due(self, status: JobStatus, now: float | None = None, limit: int = 100) -> Iterator[Job]:
        """Jobs in `status` whose `sweep_at` is before `now` (upload window, lease, start of
        a queued wait); with now=inf, every pending, queued or running job."""
        now = self.clock() if now is None else now
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": SWEEP_INDEX,
            "KeyConditionExpression": "sweep_status = :s AND sweep_at < :now",
            "ExpressionAttributeValues": {":s": {"S": status.value}, ":now": {"N": repr(min(now, 1e30))}},
            "Limit": limit,
        }
        while True:
            resp = self._db.query(**kwargs)
            for item in resp.get("Items", []):
                yield _job(item)
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    # ---- per-owner counters ------------------------------------------------------------

    def count_create(self, owner: str, limit: int, window_seconds: int) -> int:
        """Count one create against the owner's fixed-window limit, or raise RateLimited
        (with the seconds until the window ends). One conditional ADD on the window's counter
        item: of N concurrent creates exactly `limit` pass. Returns the count after this one."""
        now = self.clock()
        window = int(now // window_seconds)
        ends = (window + 1) * window_seconds
        key = "rate#" + hashlib.sha256(owner.encode()).hexdigest()[:32] + f"#{window}"
        try:
            resp = self._db.update_item(
                TableName=self.table_name,
                Key={"job_id": {"S": key}},
                UpdateExpression="ADD #n :one SET #ttl = if_not_exists(#ttl, :ttl)",
                ConditionExpression="attribute_not_exists(#n) OR #n < :limit",
                ExpressionAttributeNames={"#n": "creates", "#ttl": "ttl"},
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":limit": {"N": str(limit)},
                    ":ttl": {"N": str(ends + 3600)},
                },
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            retry_after = max(1, int(-(-(ends - now) // 1)))
            raise RateLimited(
                f"over the limit of {limit} job creates per {window_seconds} s for this caller; "
                f"retry after {retry_after} s",
                retry_after=retry_after,
                details={"limit": limit, "window_seconds": window_seconds, "retry_after": retry_after},
            ) from exc
        return int(resp["Attributes"]["creates"]["N"])

    # ---- throughput and queue position (approximate, cheap) ---------------------------

    @staticmethod
    def _pool_key(queue_url: str) -> str:
        return hashlib.sha256(queue_url.encode()).hexdigest()[:16]

    def count_claim(self, queue_url: str) -> None:
        """A worker of the pool draining `queue_url` claimed a job: one ADD on this minute's
        counter (what the queue estimate divides by)."""
        minute = int(self.clock() // 60)
        self._db.update_item(
            TableName=self.table_name,
            Key={"job_id": {"S": f"claims#{self._pool_key(queue_url)}#{minute}"}},
            UpdateExpression="ADD #n :one SET #ttl = if_not_exists(#ttl, :ttl)",
            ExpressionAttributeNames={"#n": "claims", "#ttl": "ttl"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":ttl": {"N": str((minute + 60) * 60)}},
        )

    def claims_per_minute(self, queue_url: str, minutes: int = 5) -> float:
        """The pool's claims per minute over the last `minutes` whole minutes and this one."""
        now = self.clock()
        current = int(now // 60)
        keys = [
            {"job_id": {"S": f"claims#{self._pool_key(queue_url)}#{m}"}} for m in range(current - minutes, current + 1)
        ]
        resp = self._db.batch_get_item(RequestItems={self.table_name: {"Keys": keys}})
        total = sum(int(item["claims"]["N"]) for item in resp.get("Responses", {}).get(self.table_name, []))
        span = minutes + (now - current * 60) / 60  # the whole minutes and the part of this one
        return total / span if span > 0 else 0.0

    def queued_ahead(self, job_id: str, priority: Priority, max_items: int = 1000) -> int:
        """Queued jobs of `priority` whose queued wait started before this job's (the sweep
        index orders queued jobs by that time); reads at most `max_items` index items."""
        resp = self._db.get_item(
            TableName=self.table_name,
            Key={"job_id": {"S": job_id}},
            ProjectionExpression="sweep_at",
            ConsistentRead=True,
        )
        mine = resp.get("Item", {}).get("sweep_at", {}).get("N")
        if mine is None:
            return 0
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": SWEEP_INDEX,
            "KeyConditionExpression": "sweep_status = :s AND sweep_at < :mine",
            "FilterExpression": "#p = :p" if priority != DEFAULT_PRIORITY else "#p = :p OR attribute_not_exists(#p)",
            "ExpressionAttributeNames": {"#p": "priority"},
            "ExpressionAttributeValues": {
                ":s": {"S": JobStatus.QUEUED.value},
                ":mine": {"N": mine},
                ":p": {"S": priority},
            },
            "Select": "COUNT",
            "Limit": max_items,
        }
        count = read = 0
        while read < max_items:
            page = self._db.query(**kwargs)
            count += page.get("Count", 0)
            read += page.get("ScannedCount", 0)
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return count

    # ---- create ------------------------------------------------------------------------

    def create(self, job: Job, idempotency_key: str | None = None, fingerprint: str = "") -> tuple[Job, bool]:
        """Store a new job (pending; or queued, for a source URL). With an idempotency key, a repeat of the same request
        returns the job the first one made (created=False); the same key with a different
        request is refused."""
        item = job.model_dump(mode="json")
        # pending: the sweeper expires it when its upload window closes; queued (a source-URL
        # job, which has no upload): it re-sends its message if no worker claims it
        item["sweep_status"] = job.status.value
        item["sweep_at"] = self.clock() if job.status is JobStatus.QUEUED else job.upload_expires_at
        put_job = {
            "TableName": self.table_name,
            "Item": _serialize(item),
            "ConditionExpression": "attribute_not_exists(job_id)",
        }
        if idempotency_key is None:
            try:
                self._db.put_item(**put_job)
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                    raise JobAlreadyExists(f"job {job.job_id} exists") from exc
                raise
            return job, True

        idem_id = "idem#" + hashlib.sha256(f"{job.owner}\n{idempotency_key}".encode()).hexdigest()
        idem_item = {
            "job_id": idem_id,
            "idem_owner": job.owner,
            "target_job_id": job.job_id,
            "fingerprint": fingerprint,
            "ttl": int(self.clock()) + IDEMPOTENCY_TTL_SECONDS,
        }
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {"Put": put_job},
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": _serialize(idem_item),
                            "ConditionExpression": "attribute_not_exists(job_id)",
                        }
                    },
                ]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            resp = self._db.get_item(TableName=self.table_name, Key={"job_id": {"S": idem_id}}, ConsistentRead=True)
            if "Item" not in resp:
                raise
            existing = _deserialize(resp["Item"])
            if existing.get("fingerprint") != fingerprint:
                raise IdempotencyConflict(
                    "this Idempotency-Key was already used with a different request; use a new key"
                ) from exc
            return self.get(existing["target_job_id"]), False
        return job, True

    # ---- transitions -------------------------------------------------------------------

    def set_multipart(self, job_id: str, upload_id: str | None, expected: str | None) -> bool:
        """Record the multipart upload of a pending job (None: forget it), if the record still
        holds `expected`; False when the job moved on or another request got there first."""
        names = {"#in": "input", "#mp": "multipart_upload_id", "#st": "status"}
        values: dict[str, Any] = {":pending": JobStatus.PENDING.value}
        if expected is None:  # a record written with the field null has it as a NULL
            condition = "attribute_not_exists(#in.#mp) OR attribute_type(#in.#mp, :null)"
            values[":null"] = "NULL"
        else:
            condition = "#in.#mp = :expected"
            values[":expected"] = expected
        if upload_id is None:
            update = "REMOVE #in.#mp"
        else:
            update = "SET #in.#mp = :id"
            values[":id"] = upload_id
        try:
            self._db.update_item(
                TableName=self.table_name,
                Key={"job_id": {"S": job_id}},
                UpdateExpression=update,
                ConditionExpression=f"attribute_exists(job_id) AND #st = :pending AND ({condition})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=_serialize(values),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def record_callback(self, job_id: str, callback: Callback, seen_attempts: int) -> bool:
        """Store how the job's webhook delivery went, if no other sender recorded a try since
        this one read the job (`seen_attempts`); False when one did. Not a status change."""
        try:
            self._db.update_item(
                TableName=self.table_name,
                Key={"job_id": {"S": job_id}},
                UpdateExpression="SET #cb = :cb",
                ConditionExpression="attribute_exists(job_id) AND #cb.#n = :seen",
                ExpressionAttributeNames={"#cb": "callback", "#n": "attempts"},
                ExpressionAttributeValues=_serialize({":cb": callback.model_dump(mode="json"), ":seen": seen_attempts}),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _update(
        self,
        job_id: str,
        transition: Transition,
        *,
        sets: dict[str, Any] | None = None,
        removes: tuple[str, ...] = (),
        attempt: int | None = None,
        extra_condition: str = "",
        extra_values: dict[str, Any] | None = None,
        extra_names: dict[str, str] | None = None,
        add_attempt: bool = False,
    ) -> dict[str, Any]:
        """The conditional UpdateItem of one transition (without its return options)."""
        now = self.clock()
        new_status = target(transition)
        sets = {"status": new_status.value, "updated_at": iso(now), **(sets or {})}
        removes = (*removes, *(field for field, value in sets.items() if value is None))
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        parts = []
        for i, (field, value) in enumerate(item for item in sets.items() if item[1] is not None):
            path = []
            for j, segment in enumerate(field.split(".")):  # "input.size" is a nested path
                names[f"#f{i}_{j}"] = segment
                path.append(f"#f{i}_{j}")
            values[f":v{i}"] = value
            parts.append(f"{'.'.join(path)} = :v{i}")
        if add_attempt:
            parts.append("#att = #att + :one")
            values[":one"] = 1
        expr = "SET " + ", ".join(parts)
        if removes:
            for i, field in enumerate(removes):
                names[f"#r{i}"] = field
            expr += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes)))

        allowed = sorted(s.value for s in sources(transition))
        names["#st"] = "status"
        if add_attempt or attempt is not None:
            names["#att"] = "attempt"
        status_values = {f":src{i}": s for i, s in enumerate(allowed)}
        values.update(status_values)
        condition = f"attribute_exists(job_id) AND #st IN ({', '.join(status_values)})"
        if attempt is not None:
            condition += " AND #att = :attempt"
            values[":attempt"] = attempt
        if extra_condition:
            condition += f" AND ({extra_condition})"
            values.update(extra_values or {})
            names.update(extra_names or {})
        return {
            "TableName": self.table_name,
            "Key": {"job_id": {"S": job_id}},
            "UpdateExpression": expr,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": _serialize(values),
        }

    def _transition(self, job_id: str, transition: Transition, **kwargs: Any) -> Job:
        update = self._update(job_id, transition, **kwargs)
        try:
            resp = self._db.update_item(**update, ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            raise self._why(job_id, transition, kwargs.get("attempt"), exc.response.get("Item")) from exc
        return _job(resp["Attributes"])

    def _exit(self, job_id: str, transition: Transition, **kwargs: Any) -> Job:
        """A transition that may leave `running`: the owner's running slot is freed after it."""
        return self._free_slot(self._transition(job_id, transition, **kwargs))

    def _why(self, job_id: str, transition: Transition, attempt: int | None, old: dict[str, Any] | None) -> Exception:
        if old is None:
            try:
                current = self.get(job_id)
            except JobNotFound as exc:
                return exc
        else:
            current = _job(old)
        if current.status not in sources(transition):
            return InvalidTransition(
                f"cannot {transition.value} job {job_id}: it is {current.status.value}",
                details={"status": current.status.value},
            )
        if attempt is not None and current.attempt != attempt:
            return StaleAttempt(
                f"attempt {attempt} of job {job_id} is stale: the job is on attempt {current.attempt}",
                details={"attempt": current.attempt},
            )
        return InvalidTransition(
            f"cannot {transition.value} job {job_id} now", details={"status": current.status.value}
        )

    def enqueue(self, job_id: str, size: int, *, etag: str | None = None, version_id: str | None = None) -> Job:
        """pending -> queued, once the upload checked out; `etag` (and `version_id`) pin the
        object that was checked (`input.etag`: the worker downloads with IfMatch on it)."""
        now = self.clock()
        pins = {f"input.{k}": v for k, v in (("etag", etag), ("version_id", version_id)) if v is not None}
        return self._transition(
            job_id,
            Transition.ENQUEUE,
            sets={"queued_at": iso(now), "input.size": size, **pins, **self._queued_sweep(now)},
        )

    @staticmethod
    def _queued_sweep(now: float) -> dict[str, Any]:
        """A queued wait starts now: the sweeper re-sends the message if no worker claims it."""
        return {"sweep_status": JobStatus.QUEUED.value, "sweep_at": now, "redrives": None}

    def redrive(self, job_id: str, attempt: int, redrives: int, next_sweep_at: float) -> Job:
        """queued -> queued: the sweeper re-sent the job's message (its `redrives`-th time in
        this queued period, fenced by `attempt` and the count so two sweepers count once)."""
        return self._transition(
            job_id,
            Transition.REDRIVE,
            sets={"redrives": redrives + 1, "sweep_at": next_sweep_at},
            attempt=attempt,
            extra_condition="attribute_not_exists(#rd) OR #rd = :rd" if redrives == 0 else "#rd = :rd",
            extra_values={":rd": redrives},
            extra_names={"#rd": "redrives"},
        )

    def claim(self, job_id: str, worker: str, lease_seconds: float, owner_cap: int = 0) -> Job:
        """queued -> running (or take over a running job whose lease expired): attempt + 1.
        With `owner_cap`, the job also takes one of its owner's running slots in the same
        transaction, or OwnerAtCap is raised and nothing changes (the job stays queued)."""
        now = self.clock()
        lease = now + lease_seconds
        update = self._update(
            job_id,
            Transition.CLAIM,
            sets={
                "worker": worker,
                "lease_expires_at": lease,
                "started_at": iso(now),
                "progress": 0,
                "sweep_status": JobStatus.RUNNING.value,
                "sweep_at": lease,
                "redrives": None,
            },
            add_attempt=True,
            extra_condition="#st = :queued OR lease_expires_at < :now",
            extra_values={":queued": JobStatus.QUEUED.value, ":now": now},
        )
        if not owner_cap:
            try:
                resp = self._db.update_item(
                    **update, ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD"
                )
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
                raise self._why(job_id, Transition.CLAIM, None, exc.response.get("Item")) from exc
            return _job(resp["Attributes"])
        owner_key = self.get(job_id).owner_key
        slot = {
            "TableName": self.table_name,
            "Key": {"job_id": {"S": self._slots_key(owner_key)}},
            "UpdateExpression": "ADD #jobs :job SET #ss = :ss, #sa = :zero",
            "ConditionExpression": "attribute_not_exists(#jobs) OR size(#jobs) < :cap OR contains(#jobs, :id)",
            "ExpressionAttributeNames": {"#jobs": "jobs", "#ss": "sweep_status", "#sa": "sweep_at"},
            "ExpressionAttributeValues": {
                ":job": {"SS": [job_id]},
                ":id": {"S": job_id},
                ":cap": {"N": str(owner_cap)},
                ":ss": {"S": SLOTS_SWEEP_STATUS},
                ":zero": {"N": "0"},
            },
        }
        try:
            self._db.transact_write_items(TransactItems=[{"Update": update}, {"Update": slot}])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if reasons[:1] == ["ConditionalCheckFailed"] or not reasons:
                raise self._why(job_id, Transition.CLAIM, None, None) from exc
            if reasons[1:2] == ["ConditionalCheckFailed"]:
                raise OwnerAtCap(
                    f"the owner of job {job_id} already runs {owner_cap} job(s)", details={"cap": owner_cap}
                ) from exc
            raise
        return self.get(job_id)

    @staticmethod
    def _slots_key(owner_key: str) -> str:
        return f"slots#{owner_key}"

    def _free_slot(self, job: Job) -> Job:
        """The job left running: its owner's slot is free again (idempotent; nothing to do
        when its owner has no slot item, i.e. no cap was ever applied). Best effort after the
        transition, which stands either way: a slot this fails to free, the sweeper frees."""
        try:
            self._db.update_item(
                TableName=self.table_name,
                Key={"job_id": {"S": self._slots_key(job.owner_key)}},
                UpdateExpression="DELETE #jobs :job",
                ConditionExpression="contains(#jobs, :id)",
                ExpressionAttributeNames={"#jobs": "jobs"},
                ExpressionAttributeValues={":job": {"SS": [job.job_id]}, ":id": {"S": job.job_id}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                logger.warning("running slot not freed; the sweeper will", extra={"job_id": job.job_id})
        except BotoCoreError:
            logger.warning("running slot not freed; the sweeper will", extra={"job_id": job.job_id})
        return job

    def running_slots(self) -> Iterator[tuple[str, list[str]]]:
        """(owner key, running job ids) of every owner's slot item."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": SWEEP_INDEX,
            "KeyConditionExpression": "sweep_status = :s",
            "ExpressionAttributeValues": {":s": {"S": SLOTS_SWEEP_STATUS}},
        }
        while True:
            resp = self._db.query(**kwargs)
            for item in resp.get("Items", []):
                yield item["job_id"]["S"].removeprefix("slots#"), sorted(item.get("jobs", {}).get("SS", []))
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def free_stale_slots(self) -> int:
        """Drop slot ids whose job is no longer running (an exit that stopped between its two
        writes); returns how many were freed."""
        freed = 0
        for _, job_ids in self.running_slots():
            for job_id in job_ids:
                try:
                    job = self.get(job_id)
                except JobNotFound:
                    continue
                if job.status is not JobStatus.RUNNING:
                    self._free_slot(job)
                    freed += 1
        return freed

    def seen_over_cap(self, job_id: str) -> None:
        """A worker saw the queued job and left it queued (its owner is at the cap): its wait
        restarts now, so the sweeper does not count it as a lost message."""
        try:
            self._db.update_item(
                TableName=self.table_name,
                Key={"job_id": {"S": job_id}},
                UpdateExpression="SET sweep_at = :now REMOVE redrives",
                ConditionExpression="#st = :queued",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={":now": {"N": repr(self.clock())}, ":queued": {"S": JobStatus.QUEUED.value}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def heartbeat(self, job_id: str, attempt: int, lease_seconds: float, progress: int | None = None) -> Job:
        """Extend the lease (and record progress). Fails once the job was cancelled or taken over."""
        lease = self.clock() + lease_seconds
        sets: dict[str, Any] = {"lease_expires_at": lease, "sweep_at": lease}
        if progress is not None:
            sets["progress"] = max(0, min(100, int(progress)))
        return self._transition(job_id, Transition.HEARTBEAT, sets=sets, attempt=attempt)

    def record_fetched(self, job_id: str, attempt: int, size: int) -> Job:
        """A source-URL job's file was fetched: its size replaces the cap the job showed."""
        return self._transition(job_id, Transition.HEARTBEAT, sets={"input.size": size}, attempt=attempt)

    def succeed(self, job_id: str, attempt: int, result: ResultSummary, log_key: str | None) -> Job:
        return self._exit(
            job_id,
            Transition.SUCCEED,
            sets={
                "finished_at": iso(self.clock()),
                "progress": 100,
                "result": result.model_dump(mode="json"),
                "log_key": log_key,
            },
            removes=(*_INTERNAL, "lease_expires_at"),
            attempt=attempt,
        )

    def fail(
        self,
        job_id: str,
        error: ErrorInfo,
        *,
        attempt: int | None = None,
        only_from: frozenset[JobStatus] | None = None,
        log_key: str | None = None,
    ) -> Job:
        """Any non-terminal status -> failed (narrowed by `only_from`; fenced by `attempt`)."""
        sets: dict[str, Any] = {"finished_at": iso(self.clock()), "error": error.model_dump()}
        if log_key:
            sets["log_key"] = log_key
        extra, values = "", {}
        if only_from is not None:
            names = {f":only{i}": s.value for i, s in enumerate(sorted(only_from))}
            extra, values = f"#st IN ({', '.join(names)})", names
        return self._exit(
            job_id,
            Transition.FAIL,
            sets=sets,
            removes=(*_INTERNAL, "lease_expires_at"),
            attempt=attempt,
            extra_condition=extra,
            extra_values=values,
        )

    def _release(self, job_id: str, attempt: int, transition: Transition, expired_only: bool = False) -> Job:
        """running -> queued: the attempt's worker, lease and progress are dropped; a new
        queued wait starts (swept like any other)."""
        return self._exit(
            job_id,
            transition,
            sets={"progress": 0, **self._queued_sweep(self.clock())},
            removes=("lease_expires_at", "worker"),
            attempt=attempt,
            extra_condition="lease_expires_at < :now" if expired_only else "",
            extra_values={":now": self.clock()} if expired_only else None,
        )

    def give_back(self, job_id: str, attempt: int) -> Job:
        """running -> queued by the worker that holds it (SIGTERM, Spot reclaim)."""
        return self._release(job_id, attempt, Transition.GIVE_BACK)

    def requeue_expired(self, job_id: str, attempt: int) -> Job:
        """running -> queued for a job whose lease expired with no live worker (the sweeper)."""
        return self._release(job_id, attempt, Transition.REQUEUE, expired_only=True)

    def requeue(self, job_id: str, attempt: int) -> Job:
        """running -> queued for an attempt whose worker is known to be gone (the reconciler)."""
        return self._release(job_id, attempt, Transition.REQUEUE)

    def cancel(self, job_id: str) -> Job:
        return self._exit(
            job_id,
            Transition.CANCEL,
            sets={"finished_at": iso(self.clock())},
            removes=(*_INTERNAL, "lease_expires_at"),
        )
