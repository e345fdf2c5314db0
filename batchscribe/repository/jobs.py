"""The job records: the only code that reads or writes a job item.

Every state change is one conditional UpdateItem built from `state_machine.TRANSITIONS`.
Writes by a worker are also conditioned on `attempt` (the fencing token), so a worker that
lost its lease can never overwrite a newer attempt. A failed condition is mapped to a domain
error (JobNotFound, StaleAttempt, InvalidTransition) in one place, `_why`, from the item's old
image, never the message text.

Item layout: key `job_id`; `owner`, `created_at` (GSI `by_owner`, newest first). While a job
can go stale it carries `sweep_status` + `sweep_at` (sparse GSI `by_sweep`): pending jobs until
their upload window closes, queued jobs from the time their wait started (pushed later by each
redrive, see `Lifecycle.sweep`), running jobs until about when their lease expires.

A running job's entry is kept still while its worker beats (every few seconds):
- its `sweep_at` is the lease end rounded down to a bucket of half a lease, so a heartbeat sets
  the same value again (no index write) except about once a bucket, when the lease crosses into
  the next one (one move, delete + put). Rounded down, the entry comes due no later than the
  lease: `due` reads each entry's item and yields it only once the exact `lease_expires_at` has
  passed. A worker that beats on time is never due (a bucket is at most lease - heartbeat:
  `Timings` keeps two beats in a lease);
- its partition is `running#<shard>`, one of `RUNNING_SWEEP_SHARDS` by job id (the sweep reads
  them all), so the running jobs' writes spread over that many index partitions;
- the index carries only the attributes `INDEX_ATTRIBUTES` names, none of which a beat changes.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from batchscribe.errors import BadRequest, InvalidTransition, JobAlreadyExists, JobNotFound, OwnerAtCap, StaleAttempt
from batchscribe.keys import is_job_id
from batchscribe.models import DEFAULT_PRIORITY, Callback, ErrorInfo, Job, JobStatus, Priority, ResultSummary, iso
from batchscribe.repository.dynamo import Refused, Table, Update, deserialize, serialize
from batchscribe.repository.idempotency import IdempotencyRecords
from batchscribe.repository.slots import OwnerSlots
from batchscribe.resources import OWNER_INDEX, RUNNING_SWEEP_SHARDS, SWEEP_INDEX
from batchscribe.state_machine import Transition, sources, target

_INTERNAL = ("sweep_status", "sweep_at")
_LEFT_RUNNING = (*_INTERNAL, "lease_expires_at")  # what a job that ends drops


def running_partition(job_id: str) -> str:
    """The sweep index partition of a running job: `running#<shard>`, from its id."""
    return f"{JobStatus.RUNNING.value}#{zlib.crc32(job_id.encode()) % RUNNING_SWEEP_SHARDS}"


def sweep_partitions(status: JobStatus) -> list[str]:
    """The sweep index partitions that hold jobs in `status`. Running: every shard, and the
    unsharded `running` of items written before the shards (a deployed table's old leases)."""
    if status is JobStatus.RUNNING:
        return [f"{status.value}#{n}" for n in range(RUNNING_SWEEP_SHARDS)] + [status.value]
    return [status.value]


def lease_bucket(lease_expires_at: float, lease_seconds: float) -> float:
    """A running job's `sweep_at`: its lease end rounded down to a bucket of half a lease."""
    bucket = lease_seconds / 2
    return math.floor(lease_expires_at / bucket) * bucket


def _job(item: dict[str, Any]) -> Job:
    data = deserialize(item)
    for name in _INTERNAL:
        data.pop(name, None)
    return Job.model_validate(data)


def job_from_image(image: dict[str, Any] | None) -> Job | None:
    """The job in a DynamoDB stream image (typed attribute values), or None for what is not
    a job: idempotency records, counters, slots, deletions."""
    if not image or "owner" not in image:
        return None
    return _job(image)


def job_item(job: Job) -> dict[str, Any]:
    """A job as the typed item the table stores (what a stream image carries)."""
    return serialize(job.model_dump(mode="json"))


class JobRepository(Table):
    def __init__(self, table_name: str, clock: Callable[[], float] = time.time) -> None:
        super().__init__(table_name, clock)
        self.slots = OwnerSlots(table_name, clock)
        self.idempotency = IdempotencyRecords(table_name, clock)

    # ---- reads -------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        item = self.get_item(job_id) if is_job_id(job_id) else None
        if item is None or "owner" not in item:
            raise JobNotFound(f"job {job_id!r} not found")
        return _job(item)

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
        """The owner's jobs, newest first. `next_token` is opaque to clients. A status or
        priority filter is applied after each page is read, so pages are read until the
        page is full; at most 10, so a sparse filter costs a few reads per call."""
        request = _owner_query(owner, status, priority, limit)
        if next_token:
            request["ExclusiveStartKey"] = _decode_token(next_token, owner)
        jobs: list[Job] = []
        last = None
        for page in self.query(max_pages=10, **request):
            jobs.extend(_job(item) for item in page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if len(jobs) >= limit:
                break
        if len(jobs) > limit:
            jobs = jobs[:limit]
            return jobs, _encode_token(jobs[-1].job_id, jobs[-1].created_at)
        if last:
            plain = deserialize(last)
            return jobs, _encode_token(plain["job_id"], plain["created_at"])
        return jobs, None

    def due(
        self, status: JobStatus, now: float | None = None, *, worker: str | None = None, limit: int = 100
    ) -> Iterator[Job]:
        """Jobs in `status` whose deadline passed before `now`: an upload window, the start of
        a queued wait, a lease (exactly: a running job's index entry comes due a little early, see
        the module docstring); with now=inf, every pending, queued or running job (of `worker`).
        Each is read from the table as it is now: the index only says which to read."""
        now = self.clock() if now is None else now
        for partition in sweep_partitions(status):
            for entry in self._sweep_entries(partition, now, worker, limit):
                item = self.get_item(entry["job_id"]["S"])
                if item is not None and _due(item, status, now):
                    yield _job(item)

    def _sweep_entries(self, partition: str, now: float, worker: str | None, limit: int) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {
            "IndexName": SWEEP_INDEX,
            "KeyConditionExpression": "sweep_status = :s AND sweep_at < :now",
            "ExpressionAttributeValues": {":s": {"S": partition}, ":now": {"N": repr(min(now, 1e30))}},
            "Limit": limit,
        }
        if worker is not None:
            request["FilterExpression"] = "#w = :w"
            request["ExpressionAttributeNames"] = {"#w": "worker"}
            request["ExpressionAttributeValues"][":w"] = {"S": worker}
        for page in self.query(**request):
            yield from page.get("Items", [])

    def queued_ahead(self, job_id: str, priority: Priority, max_items: int = 1000) -> int:
        """Queued jobs of `priority` whose queued wait started before this job's (the sweep
        index orders queued jobs by that time); reads at most `max_items` index items."""
        mine = (self.get_item(job_id, ProjectionExpression="sweep_at") or {}).get("sweep_at", {}).get("N")
        if mine is None:
            return 0
        default = priority == DEFAULT_PRIORITY  # records from before priorities carry none
        pages = self.query(
            IndexName=SWEEP_INDEX,
            KeyConditionExpression="sweep_status = :s AND sweep_at < :mine",
            FilterExpression="#p = :p OR attribute_not_exists(#p)" if default else "#p = :p",
            ExpressionAttributeNames={"#p": "priority"},
            ExpressionAttributeValues={
                ":s": {"S": JobStatus.QUEUED.value},
                ":mine": {"N": mine},
                ":p": {"S": priority},
            },
            Select="COUNT",
            Limit=max_items,
        )
        count = read = 0
        for page in pages:
            count += page.get("Count", 0)
            read += page.get("ScannedCount", 0)
            if read >= max_items:
                break
        return count

    def waiting(self, max_items: int) -> tuple[list[Job], bool]:
        """The jobs queued now (read from the sweep index's queued partition, then each record
        in batches), at most `max_items` of them: in the index's order, by when their wait began
        or, for a job whose message the sweeper re-sent, when the next re-send is due. True
        with them when more are queued than were read."""
        ids: list[str] = []
        pages = self.query(
            IndexName=SWEEP_INDEX,
            KeyConditionExpression="sweep_status = :s",
            ExpressionAttributeValues={":s": {"S": JobStatus.QUEUED.value}},
            ProjectionExpression="job_id",
            Limit=min(max_items, 1000),
        )
        more = False
        for page in pages:
            ids += [item["job_id"]["S"] for item in page.get("Items", [])]
            if len(ids) >= max_items:
                more = len(ids) > max_items or "LastEvaluatedKey" in page
                break
        jobs = [_job(item) for item in self.batch_get(ids[:max_items]) if "owner" in item]
        return [j for j in jobs if j.status is JobStatus.QUEUED], more

    # ---- create ------------------------------------------------------------------------

    def create(self, job: Job, idempotency_key: str | None = None, fingerprint: str = "") -> tuple[Job, bool]:
        """Store a new job (pending; or queued, for a source URL). With an idempotency key, a
        repeat of the same request returns the job the first one made (created=False); the
        same key with a different request is refused (IdempotencyConflict)."""
        item = job.model_dump(mode="json")
        # pending: the sweeper expires it when its upload window closes; queued (a source-URL
        # job, which has no upload): it re-sends its message if no worker claims it
        item["sweep_status"] = job.status.value
        item["sweep_at"] = self.clock() if job.status is JobStatus.QUEUED else job.upload_expires_at
        put = {
            "TableName": self.table_name,
            "Item": serialize(item),
            "ConditionExpression": "attribute_not_exists(job_id)",
        }
        if idempotency_key is None:
            if isinstance(self.write_if("put_item", **put), Refused):
                raise JobAlreadyExists(f"job {job.job_id} exists")
            return job, True
        record = self.idempotency.put(job.owner, idempotency_key, job.job_id, fingerprint)
        failed = self.transact_if([{"Put": put}, record])
        if failed is None:
            return job, True
        earlier = self.idempotency.earlier_job(job.owner, idempotency_key, fingerprint)
        if earlier is None:
            raise JobAlreadyExists(f"job {job.job_id} exists")
        return self.get(earlier), False

    # ---- writes that are not status changes ---------------------------------------------

    def set_multipart(self, job_id: str, upload_id: str | None, expected: str | None) -> bool:
        """Record the multipart upload of a pending job (None: forget it), if the record still
        holds `expected`; False when the job moved on or another request got there first."""
        names = {"#in": "input", "#mp": "multipart_upload_id", "#st": "status"}
        values: dict[str, Any] = {":pending": JobStatus.PENDING.value}
        if expected is None:  # a record written with the field null has it as a NULL
            holds = "attribute_not_exists(#in.#mp) OR attribute_type(#in.#mp, :null)"
            values[":null"] = "NULL"
        else:
            holds = "#in.#mp = :expected"
            values[":expected"] = expected
        update = Update(
            sets={"input.multipart_upload_id": upload_id},  # None: removed
            condition=f"attribute_exists(job_id) AND #st = :pending AND ({holds})",
            names=names,
            values=values,
        )
        return not isinstance(self.update_if(job_id, update), Refused)

    def record_callback(self, job_id: str, callback: Callback, seen_attempts: int) -> bool:
        """Store how the job's webhook delivery went, if no other sender recorded a try since
        this one read the job (`seen_attempts`); False when one did. Not a status change."""
        update = Update(
            sets={"callback": callback.model_dump(mode="json")},
            condition="attribute_exists(job_id) AND #cb.#n = :seen",
            names={"#cb": "callback", "#n": "attempts"},
            values={":seen": seen_attempts},
        )
        return not isinstance(self.update_if(job_id, update), Refused)

    def seen_over_cap(self, job_id: str) -> None:
        """A worker saw the queued job and left it queued (its owner is at the cap): its wait
        restarts now, so the sweeper does not count it as a lost message."""
        update = Update(
            sets={"sweep_at": self.clock(), "redrives": None},
            condition="#st = :queued",
            names={"#st": "status"},
            values={":queued": JobStatus.QUEUED.value},
        )
        self.update_if(job_id, update)  # refused: it moved on, nothing to restart

    # ---- transitions -------------------------------------------------------------------

    def _update(
        self,
        transition: Transition,
        *,
        sets: dict[str, Any] | None = None,
        removes: tuple[str, ...] = (),
        attempt: int | None = None,
        also: str = "",
        names: dict[str, str] | None = None,
        values: dict[str, Any] | None = None,
        add_attempt: bool = False,
    ) -> Update:
        """The conditional update of one transition: the new status, `updated_at`, and the
        condition that the job exists in one of the transition's source statuses (and is on
        `attempt`, and `also` holds)."""
        names = {"#st": "status", **(names or {})}
        values = dict(values or {})
        allowed = {f":src{i}": s.value for i, s in enumerate(sorted(sources(transition)))}
        values.update(allowed)
        condition = f"attribute_exists(job_id) AND #st IN ({', '.join(allowed)})"
        if add_attempt or attempt is not None:
            names["#att"] = "attempt"
        if attempt is not None:
            condition += " AND #att = :attempt"
            values[":attempt"] = attempt
        if also:
            condition += f" AND ({also})"
        if add_attempt:
            values[":one"] = 1
        return Update(
            sets={"status": target(transition).value, "updated_at": iso(self.clock()), **(sets or {})},
            removes=removes,
            condition=condition,
            names=names,
            values=values,
            raw=("#att = #att + :one",) if add_attempt else (),
        )

    def _transition(self, job_id: str, transition: Transition, update: Update, attempt: int | None = None) -> Job:
        resp = self.update_if(job_id, update, ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
        if isinstance(resp, Refused):
            raise self._why(job_id, transition, attempt, resp.old)
        return _job(resp["Attributes"])

    def _exit(self, job_id: str, transition: Transition, update: Update, attempt: int | None = None) -> Job:
        """A transition that may leave `running`: the owner's running slot is freed after it."""
        job = self._transition(job_id, transition, update, attempt)
        self.slots.free(job.owner_key, job.job_id)
        return job

    def _why(self, job_id: str, transition: Transition, attempt: int | None, old: dict[str, Any] | None) -> Exception:
        """The domain error for a transition whose condition failed, from the item as it was."""
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
        sets = {"queued_at": iso(now), "input.size": size, **pins, **_queued_sweep(now)}
        return self._transition(job_id, Transition.ENQUEUE, self._update(Transition.ENQUEUE, sets=sets))

    def redrive(self, job_id: str, attempt: int, redrives: int, next_sweep_at: float) -> Job:
        """queued -> queued: the sweeper re-sent the job's message (its `redrives`-th time in
        this queued period, fenced by `attempt` and the count so two sweepers count once)."""
        update = self._update(
            Transition.REDRIVE,
            sets={"redrives": redrives + 1, "sweep_at": next_sweep_at},
            attempt=attempt,
            also="attribute_not_exists(#rd) OR #rd = :rd" if redrives == 0 else "#rd = :rd",
            names={"#rd": "redrives"},
            values={":rd": redrives},
        )
        return self._transition(job_id, Transition.REDRIVE, update, attempt)

    def claim(
        self, job_id: str, worker: str, lease_seconds: float, owner_cap: int = 0, owner_key: str | None = None
    ) -> Job:
        """queued -> running (or take over a running job whose lease expired): attempt + 1.
        With `owner_cap`, the job also takes one of its owner's running slots in the same
        transaction, or OwnerAtCap is raised and nothing changes (the job stays queued); its
        `owner_key` is read from the record unless the caller read it already."""
        now = self.clock()
        lease = now + lease_seconds
        update = self._update(
            Transition.CLAIM,
            sets={
                "worker": worker,
                "lease_expires_at": lease,
                "started_at": iso(now),
                "progress": 0,
                "sweep_status": running_partition(job_id),
                "sweep_at": lease_bucket(lease, lease_seconds),
                "redrives": None,
            },
            add_attempt=True,
            also="#st = :queued OR lease_expires_at < :now",
            values={":queued": JobStatus.QUEUED.value, ":now": now},
        )
        if not owner_cap:
            return self._transition(job_id, Transition.CLAIM, update)
        owner_key = owner_key or self.get(job_id).owner_key
        failed = self.transact_if(
            [
                {"Update": update.request(self.table_name, self.key(job_id))},
                self.slots.take(owner_key, job_id, owner_cap),
            ]
        )
        if failed is None:
            return self.get(job_id)
        if failed[0]:
            raise self._why(job_id, Transition.CLAIM, None, None)
        raise OwnerAtCap(f"the owner of job {job_id} already runs {owner_cap} job(s)", details={"cap": owner_cap})

    def heartbeat(self, job_id: str, attempt: int, lease_seconds: float, progress: int | None = None) -> Job:
        """Extend the lease (and record progress). Fails once the job was cancelled or taken over.
        `sweep_at` is set to the lease's bucket: the value it holds already, except about once a
        bucket (an index entry is written only when a key or an attribute it carries changes)."""
        lease = self.clock() + lease_seconds
        sets: dict[str, Any] = {"lease_expires_at": lease, "sweep_at": lease_bucket(lease, lease_seconds)}
        if progress is not None:
            sets["progress"] = max(0, min(100, int(progress)))
        update = self._update(Transition.HEARTBEAT, sets=sets, attempt=attempt)
        return self._transition(job_id, Transition.HEARTBEAT, update, attempt)

    def record_fetched(self, job_id: str, attempt: int, size: int) -> Job:
        """A source-URL job's file was fetched: its size replaces the cap the job showed."""
        update = self._update(Transition.HEARTBEAT, sets={"input.size": size}, attempt=attempt)
        return self._transition(job_id, Transition.HEARTBEAT, update, attempt)

    def record_duration(self, job_id: str, attempt: int, seconds: float) -> Job:
        """A worker opened the job's audio: its length, for the views while the job runs."""
        update = self._update(Transition.HEARTBEAT, sets={"input.duration_seconds": seconds}, attempt=attempt)
        return self._transition(job_id, Transition.HEARTBEAT, update, attempt)

    def succeed(self, job_id: str, attempt: int, result: ResultSummary, log_key: str | None) -> Job:
        sets = {
            "finished_at": iso(self.clock()),
            "progress": 100,
            "result": result.model_dump(mode="json"),
            "log_key": log_key,
        }
        update = self._update(Transition.SUCCEED, sets=sets, removes=_LEFT_RUNNING, attempt=attempt)
        return self._exit(job_id, Transition.SUCCEED, update, attempt)

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
        only = {f":only{i}": s.value for i, s in enumerate(sorted(only_from or ()))}
        update = self._update(
            Transition.FAIL,
            sets=sets,
            removes=_LEFT_RUNNING,
            attempt=attempt,
            also=f"#st IN ({', '.join(only)})" if only else "",
            values=only,
        )
        return self._exit(job_id, Transition.FAIL, update, attempt)

    def _release(self, job_id: str, attempt: int, transition: Transition, expired_only: bool = False) -> Job:
        """running -> queued: the attempt's worker, lease and progress are dropped; a new
        queued wait starts (swept like any other)."""
        update = self._update(
            transition,
            sets={"progress": 0, **_queued_sweep(self.clock())},
            removes=("lease_expires_at", "worker"),
            attempt=attempt,
            also="lease_expires_at < :now" if expired_only else "",
            values={":now": self.clock()} if expired_only else None,
        )
        return self._exit(job_id, transition, update, attempt)

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
        update = self._update(Transition.CANCEL, sets={"finished_at": iso(self.clock())}, removes=_LEFT_RUNNING)
        return self._exit(job_id, Transition.CANCEL, update)

    def still_running(self, job_id: str) -> bool:
        """Whether the job exists and is running (the sweeper's test for a stale slot)."""
        try:
            return self.get(job_id).status is JobStatus.RUNNING
        except JobNotFound:
            return True  # not a job: leave the slot id alone, as before


def _due(item: dict[str, Any], status: JobStatus, now: float) -> bool:
    """Whether a job item read from the table is still in `status` and past its deadline (a
    running job's exact lease; else its `sweep_at`)."""
    if item.get("status", {}).get("S") != status.value:
        return False
    deadline = item.get("lease_expires_at" if status is JobStatus.RUNNING else "sweep_at", {}).get("N")
    return deadline is not None and float(deadline) < now


def _queued_sweep(now: float) -> dict[str, Any]:
    """A queued wait starts now: the sweeper re-sends the message if no worker claims it."""
    return {"sweep_status": JobStatus.QUEUED.value, "sweep_at": now, "redrives": None}


def _owner_query(owner: str, status: JobStatus | None, priority: Priority | None, limit: int) -> dict[str, Any]:
    request: dict[str, Any] = {
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
        request["ExpressionAttributeNames"]["#s"] = "status"
        request["ExpressionAttributeValues"][":s"] = {"S": status.value}
    if priority is not None:
        # records from before priorities carry none: they are `normal`
        filters.append("(#p = :p OR attribute_not_exists(#p))" if priority == DEFAULT_PRIORITY else "#p = :p")
        request["ExpressionAttributeNames"]["#p"] = "priority"
        request["ExpressionAttributeValues"][":p"] = {"S": priority}
    if filters:
        request["FilterExpression"] = " AND ".join(filters)
    return request


def _encode_token(job_id: str, created_at: str) -> str:
    """The position after (job_id, created_at); the owner is the caller's, never in the token."""
    raw = json.dumps({"j": job_id, "c": created_at}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, owner: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        job_id, created_at = data["j"], data["c"]
        if not (isinstance(job_id, str) and is_job_id(job_id) and isinstance(created_at, str)):
            raise ValueError(token)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise BadRequest("next_token is not a token this API issued", code="invalid_next_token") from exc
    return {"job_id": {"S": job_id}, "owner": {"S": owner}, "created_at": {"S": created_at}}
