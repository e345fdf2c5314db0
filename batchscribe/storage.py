"""S3 adapter: presigned uploads and downloads, object checks, result files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    def presign_get(self, key: str, expires_in: int, filename: str | None = None) -> str:
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        url: str = self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)
        return url

    def head(self, key: str) -> ObjectInfo | None:
        try:
            resp = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(size=int(resp["ContentLength"]), content_type=resp.get("ContentType"))

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=key)

    def download(self, key: str, path: Path) -> None:
        self._s3.download_file(self.bucket, key, str(path))

    def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def get_bytes(self, key: str) -> bytes:
        body: bytes = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body
