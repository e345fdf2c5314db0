"""Getting a claimed job ready for the model loop: its engine loaded, its input downloaded
(or fetched from its source URL) and opened (probed). Runs on the preparing pool, beside
the model loop; decoding starts later, on the job's own prefetch thread."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from batchscribe.errors import InvalidTransition
from batchscribe.repository import JobRepository
from batchscribe.settings import WorkerSettings
from batchscribe.sources import FetchFailed, FetchLimits, fetch, redacted
from batchscribe.storage import MediaStore
from batchscribe.urlguard import Resolver
from gpu_container.worker.engines import Engine
from gpu_container.worker.errors import InputChanged, InputMissing, PermanentJobError
from gpu_container.worker.running import EngineKey, JobRun
from gpu_container.worker.windows import SplitStream, open_stream


@dataclass
class Preparer:
    """Prepares one job at a time per calling thread; `stopping()` says the worker stops (a
    source URL's fetch then ends early, and the job is given back)."""

    settings: WorkerSettings
    store: MediaStore
    repo: JobRepository
    engine_for: Callable[[EngineKey], Engine]
    resolver: Resolver
    stopping: Callable[[], bool]

    def prepare(self, run: JobRun) -> JobRun:
        """Load the job's engine, download its input and probe it."""
        run.engine = self.engine_for(run.key)
        path = self.download(run)
        s = self.settings
        run.stream = open_stream(
            path,
            s.max_duration_seconds,
            split_channels=run.job.options.channels == "split",
            block_seconds=s.decode_block_seconds,
        )
        if isinstance(run.stream, SplitStream):
            run.log.add("channels transcribed apart", channels=run.stream.channels)
        run.log.add(
            "opened",
            container=run.stream.container_name,
            codec=run.stream.codec,
            seconds=round(run.stream.duration, 2) if run.stream.duration is not None else "unknown",
        )
        if run.stream.duration is not None:  # shown while the job runs
            with contextlib.suppress(InvalidTransition):  # cancelled or taken over: seen at the next step
                self.repo.record_duration(run.job_id, run.job.attempt, round(run.stream.duration, 3))
        return run

    def download(self, run: JobRun) -> Path:
        path = run.files.path / "input"
        pinned = run.job.input
        if pinned.source_url is not None:
            return self.fetch_source(run, path)
        try:
            # the object intake checked, not whatever a second upload to the key put there since
            self.store.download(pinned.key, path, etag=pinned.etag, version_id=pinned.version_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("404", "NoSuchKey", "NotFound", "NoSuchVersion"):
                raise InputMissing("the uploaded file is gone from storage; upload it again in a new job") from exc
            if code in ("412", "PreconditionFailed"):
                raise InputChanged(
                    "the uploaded file was replaced after the job was queued; create a new job for the new file"
                ) from exc
            raise
        run.log.add("downloaded", bytes=path.stat().st_size)
        return path

    def fetch_source(self, run: JobRun, path: Path) -> Path:
        """A source-URL job: GET its URL within the limits (batchscribe.sources), stopping as
        soon as the job is cancelled or taken over, or the worker stops."""
        s, job = self.settings, run.job
        assert job.input.source_url is not None
        run.log.add("fetching", url=redacted(job.input.source_url), max_bytes=job.input.declared_size)
        try:
            fetched = fetch(
                job.input.source_url,
                path,
                FetchLimits(job.input.declared_size, s.source_timeout_seconds, s.source_max_seconds),
                resolver=self.resolver,
                allow_private=s.allow_private,
                stop=lambda: run.beat.interrupted or self.stopping(),
            )
        except FetchFailed as exc:
            if exc.permanent:
                raise PermanentJobError(str(exc), exc.code) from exc
            raise
        run.log.add("fetched", bytes=fetched.size, content_type=fetched.content_type, redirects=fetched.redirects)
        with contextlib.suppress(InvalidTransition):  # cancelled or taken over: seen at the next step
            self.repo.record_fetched(job.job_id, job.attempt, fetched.size)
        return path
