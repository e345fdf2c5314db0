"""S3 adapter: presigned uploads and downloads, object checks, result files."""

from __future__ import annotations

import re
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from batchscribe import aws


@dataclass(frozen=True)
class PresignedPost:
    url: str
    fields: dict[str, str]


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str | None
    etag: str | None = None
    version_id: str | None = None


# Characters kept as they are in the quoted ASCII fallback: no quote, backslash, percent
# (some clients percent-decode it), `=`, separators or controls, so that even a naive parser
# finds no second parameter in it.
_FALLBACK_UNSAFE = re.compile(r"[^A-Za-z0-9 !#$&'()+\-.@\[\]^_`{}~]")
# RFC 5987 attr-char: what may stand unencoded in `filename*`
_ATTR_CHARS = "!#$&+-.^_`|~"


def content_disposition(filename: str) -> str:
    """`attachment` with the name as RFC 6266 says: a quoted ASCII fallback that can hold no
    quote, backslash or parameter of its own, and `filename*` with the exact name in UTF-8,
    percent-encoded (RFC 5987). The header is plain ASCII whatever the name."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    fallback = _FALLBACK_UNSAFE.sub("_", ascii_name).strip() or "download"
    encoded = quote(filename, safe=_ATTR_CHARS, encoding="utf-8")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


class MediaStore:
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    @property
    def _s3(self) -> Any:
        return aws.client("s3")

    def presign_upload(self, key: str, content_type: str, max_bytes: int, expires_in: int) -> PresignedPost:
        """A presigned POST pinned to one key, one Content-Type and a size cap."""
        post = self._s3.generate_presigned_post(
            Bucket=self.bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[
                {"key": key},
                {"Content-Type": content_type},
                ["content-length-range", 1, max_bytes],
            ],
            ExpiresIn=expires_in,
        )
        return PresignedPost(url=post["url"], fields=dict(post["fields"]))

    # ---- multipart uploads (large files, resumable) -------------------------------------

    def start_multipart(self, key: str, content_type: str) -> str:
        resp = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)
        return str(resp["UploadId"])

    def presign_part(self, key: str, upload_id: str, part_number: int, expires_in: int) -> str:
        url: str = self._s3.generate_presigned_url(
            "upload_part",
            Params={"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": part_number},
            ExpiresIn=expires_in,
        )
        return url

    def uploaded_parts(self, key: str, upload_id: str) -> list[tuple[int, str, int]] | None:
        """(part number, ETag, size) of the parts S3 holds, or None when the upload is gone
        (completed, aborted, or expired by the bucket's lifecycle rule)."""
        pages = self._s3.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=key, UploadId=upload_id)
        try:
            return [
                (int(p["PartNumber"]), str(p["ETag"]), int(p["Size"])) for page in pages for p in page.get("Parts", [])
            ]
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchUpload", "404"):
                return None
            raise

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        self._s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]},
        )

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("NoSuchUpload", "404"):
                raise

    def presign_get(self, key: str, expires_in: int, filename: str | None = None) -> str:
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        url: str = self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)
        return url

    def head(self, key: str) -> ObjectInfo | None:
        try:
            resp = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(
            size=int(resp["ContentLength"]),
            content_type=resp.get("ContentType"),
            etag=resp.get("ETag"),
            version_id=resp.get("VersionId"),
        )

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=key)

    def download(self, key: str, path: Path, etag: str | None = None, version_id: str | None = None) -> None:
        """Fetch an object to a file. With `version_id` that version is fetched (the managed,
        parallel transfer); with `etag` one conditional GET streams it, failing with
        `PreconditionFailed` (412) if the object changed since (the managed transfer does
        not take IfMatch)."""
        if version_id or not etag:
            extra = {"VersionId": version_id} if version_id else None
            self._s3.download_file(self.bucket, key, str(path), ExtraArgs=extra)
            return
        body = self._s3.get_object(Bucket=self.bucket, Key=key, IfMatch=etag)["Body"]
        try:
            with open(path, "wb") as out:
                shutil.copyfileobj(body, out, length=1 << 20)
        finally:
            body.close()

    def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def get_bytes(self, key: str) -> bytes:
        body: bytes = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body
