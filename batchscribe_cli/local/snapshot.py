"""The emulated data plane kept in the data folder (moto keeps its state in the process only):
saved while the stack runs and at stop, put back at start, and the jobs that were on their way
sent on again."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from pathlib import Path
from typing import Any

from batchscribe import aws
from batchscribe.settings import LifecycleSettings


class Snapshot:
    """The emulated data plane kept in the data folder, so that stopping the local stack loses
    nothing: the jobs table's items (DynamoDB JSON) and the bucket's objects (uploads,
    transcripts, logs), written at every `every` seconds and at stop, put back at start.

    Queue messages are not kept: they are derived from the jobs. At start, every queued job's
    message is sent again and every running job (its worker is gone) is requeued, which is
    what the sweeper's redrive and the reconciler would do, only at once. moto has no
    persistence of its own (its state lives in the process), hence this."""

    def __init__(self, folder: Path, table: str, bucket: str) -> None:
        self.folder = folder
        self.table = table
        self.bucket = bucket
        self._lock = threading.Lock()

    @property
    def objects(self) -> Path:
        return self.folder / "s3"

    def _index(self) -> dict[str, dict[str, Any]]:
        path = self.objects / "index.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        """Atomically: a reader (or a crash) sees the old file or the new one, never half."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def save(self) -> tuple[int, int]:
        """(items, objects) written; objects already saved with the same ETag are not read again."""
        with self._lock:
            ddb, s3 = aws.client("dynamodb"), aws.client("s3")
            items = [
                item for page in ddb.get_paginator("scan").paginate(TableName=self.table) for item in page["Items"]
            ]
            old, index = self._index(), {}
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
                for obj in page.get("Contents", []):
                    key, etag = obj["Key"], obj["ETag"]
                    name = hashlib.sha256(key.encode()).hexdigest()
                    saved = old.get(key)
                    if saved and saved["etag"] == etag and (self.objects / name).exists() and "parts" in saved:
                        index[key] = saved
                        continue
                    resp = s3.get_object(Bucket=self.bucket, Key=key)
                    self._write(self.objects / name, resp["Body"].read())
                    index[key] = {"file": name, "etag": etag, "content_type": resp.get("ContentType")}
                    index[key]["parts"] = part_sizes(s3, self.bucket, key, etag)
            for gone in {v["file"] for v in old.values()} - {v["file"] for v in index.values()}:
                (self.objects / gone).unlink(missing_ok=True)
            self._write(self.objects / "index.json", json.dumps(index).encode())
            self._write(self.folder / "dynamodb.json", json.dumps(items).encode())
            return len(items), len(index)

    def restore(self) -> tuple[int, int]:
        """(items, objects) put back into a freshly provisioned table and bucket. Objects under
        uploads/ notify the intake again, which finds their jobs past pending (a duplicate) or
        queues a job whose upload had not been taken in yet."""
        table = self.folder / "dynamodb.json"
        if not table.exists():
            return 0, 0
        ddb, s3 = aws.client("dynamodb"), aws.client("s3")
        items = json.loads(table.read_text())
        for i in range(0, len(items), 25):
            batch = {self.table: [{"PutRequest": {"Item": item}} for item in items[i : i + 25]]}
            while batch:
                batch = ddb.batch_write_item(RequestItems=batch).get("UnprocessedItems") or {}
        index = self._index()
        for key, saved in index.items():
            extra = {"ContentType": saved["content_type"]} if saved.get("content_type") else {}
            body = (self.objects / saved["file"]).read_bytes()
            if saved.get("parts"):
                put_in_parts(s3, self.bucket, key, body, saved["parts"], extra)
            else:
                s3.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
        return len(items), len(index)


def part_sizes(s3: Any, bucket: str, key: str, etag: str) -> list[int] | None:
    """The sizes of the parts an object was uploaded in (its ETag ends `-N`), else None (one
    plain PUT). A job
    pins its input's ETag, and a multipart ETag is the MD5 of its parts' MD5s: put back whole,
    the object would get a plain MD5 and the intake would take it for a replaced upload."""
    match = re.fullmatch(r'"?[0-9a-f]+-(\d+)"?', etag)
    if match is None:
        return None
    return [
        int(s3.head_object(Bucket=bucket, Key=key, PartNumber=n)["ContentLength"]) for n in range(1, int(match[1]) + 1)
    ]


def put_in_parts(s3: Any, bucket: str, key: str, body: bytes, sizes: list[int], extra: dict[str, Any]) -> None:
    """Upload `body` again cut at the same part boundaries, so that its ETag is the one saved."""
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
    parts, start = [], 0
    for number, size in enumerate(sizes, start=1):
        resp = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body[start : start + size]
        )
        parts.append({"PartNumber": number, "ETag": resp["ETag"]})
        start += size
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})


def recover(settings: LifecycleSettings) -> None:
    """Restored jobs that were on their way: the queues are new, so each queued job's message
    is sent again, and each running job (its worker died with the old stack) is requeued.
    Duplicates are harmless: claims are conditional."""
    from batchscribe.errors import InvalidTransition
    from batchscribe.lifecycle import Lifecycle
    from batchscribe.models import JobStatus

    lifecycle = Lifecycle.from_settings(settings)
    for job in lifecycle.repo.due(JobStatus.RUNNING, now=float("inf")):
        lifecycle.send_again(job)
        with contextlib.suppress(InvalidTransition):
            lifecycle.repo.requeue(job.job_id, job.attempt)
    for job in lifecycle.repo.due(JobStatus.QUEUED, now=float("inf")):
        lifecycle.send_again(job)
