"""What becomes of a job the worker stops holding, on the finishing pool (never on the model
loop): its transcript written and committed; or its failure classified once — permanent
(`PermanentJobError`: failed with its code, message deleted) or transient (anything else:
given back, message visible again after a short backoff, so SQS retries it; on the job's last
attempt failed `retries_exhausted` with the cause); or it is released because it was
cancelled or taken over; or, when the worker stops, given back with its message visible at once.

Each give-back stops the job's heartbeat first (a beat in progress waited for): a late
extension would otherwise hide the message again for the whole visibility timeout.
"""

from __future__ import annotations

import contextlib
from typing import Any

from batchscribe import errors as codes
from batchscribe import keys
from batchscribe.errors import InvalidTransition, StaleAttempt
from batchscribe.models import ErrorInfo, JobStatus, ResultSummary
from batchscribe.queue import ClassQueues
from batchscribe.repository import JobRepository
from batchscribe.settings import MAX_ATTEMPTS
from batchscribe.storage import MediaStore
from gpu_container.worker.batched import assemble_stream
from gpu_container.worker.errors import JobCancelled, LeaseLost, PermanentJobError
from gpu_container.worker.notices import notices
from gpu_container.worker.running import JobRun, Outcome, logger
from gpu_container.worker.transcript import CONTENT_TYPES, Transcript, output_text

RETRY_AFTER_SECONDS = 5  # a transient failure's message comes back after 5 s x its receives (at most 60 s)


class Finisher:
    def __init__(
        self,
        repo: JobRepository,
        queue: ClassQueues,
        store: MediaStore,
        hourly_usd: float | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.repo, self.queue, self.store = repo, queue, store
        self.hourly_usd = hourly_usd
        self.max_attempts = max_attempts

    # ---- a transcribed job ------------------------------------------------------------------

    def finish(self, run: JobRun, results: list[Any]) -> Outcome:
        """Assemble, write the outputs, commit, delete the message."""
        try:
            transcript = self.transcript(run, results)
            outputs = self.write_outputs(run, transcript)
            outcome = self.commit(run, self.summary(run, transcript, outputs), outputs)
            self.queue.delete(run.received.receipt_handle)
        except (JobCancelled, LeaseLost) as exc:
            cancelled = isinstance(exc, JobCancelled)
            run.log.add("cancelled while committing" if cancelled else "lease lost while committing")
            self.queue.delete(run.received.receipt_handle)
            outcome = Outcome.CANCELLED if cancelled else Outcome.LEASE_LOST
        except Exception as exc:  # writing outputs or committing failed transiently
            logger.exception("could not finish the job", extra={"job_id": run.job_id})
            run.log.add("could not finish; the job will be retried", error=f"{type(exc).__name__}: {exc}")
            self.give_back(run, RETRY_AFTER_SECONDS)
            outcome = Outcome.RETRY
        finally:
            run.close()
            run.log.flush()
        return outcome

    def transcript(self, run: JobRun, results: list[Any]) -> Transcript:
        assert run.engine is not None and run.stream is not None  # prepared
        engine = run.engine
        transcript = assemble_stream(results, run.stream)
        transcript = transcript.model_copy(update={"engine": engine.name, "model": engine.model_name})
        run.log.add(
            "transcribed",
            engine=engine.name,
            model=engine.model_name,
            device=engine.device,
            language=transcript.language,
            segments=len(transcript.segments),
            compute_seconds=round(run.compute_seconds, 2),
        )
        return transcript

    def summary(self, run: JobRun, transcript: Transcript, outputs: dict[str, str]) -> ResultSummary:
        seconds = run.compute_seconds
        return ResultSummary(
            language=transcript.language,
            duration_seconds=round(transcript.duration, 3),
            outputs=outputs,
            engine=transcript.engine or "",
            model=transcript.model or "",
            compute_seconds=round(seconds, 3),
            real_time_factor=round(seconds / max(transcript.duration, 1e-6), 4),
            segments=len(transcript.segments),
            # the job's share of what its worker costs: its compute seconds at the pool's price
            cost_usd=None if self.hourly_usd is None else round(seconds * self.hourly_usd / 3600, 8),
            warnings=notices(transcript, transcript.model or ""),
        )

    def write_outputs(self, run: JobRun, transcript: Transcript) -> dict[str, str]:
        outputs: dict[str, str] = {}
        job = run.job
        for fmt in job.options.formats:
            key = keys.output_key(job.owner_key, job.job_id, fmt)
            self.store.put_bytes(key, output_text(transcript, fmt).encode(), CONTENT_TYPES[fmt])
            outputs[fmt] = key
        run.log.add("outputs written", formats=",".join(outputs))
        return outputs

    def commit(self, run: JobRun, summary: ResultSummary, outputs: dict[str, str]) -> Outcome:
        try:
            self.repo.succeed(run.job_id, run.job.attempt, summary, run.log.key)
        except StaleAttempt as exc:
            raise LeaseLost(run.job_id) from exc
        except InvalidTransition as exc:
            if (exc.details or {}).get("status") == JobStatus.CANCELLED.value:
                for key in outputs.values():  # the cancel won the race: leave nothing behind
                    self.store.delete(key)
                raise JobCancelled(run.job_id) from exc
            raise LeaseLost(run.job_id) from exc
        run.log.add("succeeded", rtf=summary.real_time_factor, audio_seconds=summary.duration_seconds)
        return Outcome.SUCCEEDED

    # ---- a job that goes no further ---------------------------------------------------------

    def failed(self, run: JobRun, error: BaseException) -> Outcome:
        """Classify one job's failure: permanent -> failed with its code; transient -> given
        back for another attempt, unless this was its last (`max_attempts`): then failed
        `retries_exhausted`, saying what failed."""
        if not isinstance(error, PermanentJobError) and run.job.attempt >= self.max_attempts:
            error = PermanentJobError(
                f"attempt {run.job.attempt} of {self.max_attempts} failed: {type(error).__name__}: {error}"[:1000],
                codes.RETRIES_EXHAUSTED,
            )
        if isinstance(error, PermanentJobError):
            run.log.add("failed", code=error.code, reason=str(error))
            with contextlib.suppress(InvalidTransition):  # cancelled or taken over: that state stands
                self.repo.fail(
                    run.job_id,
                    ErrorInfo(code=error.code, message=str(error)),
                    attempt=run.job.attempt,
                    log_key=run.log.key,
                )
            self.release(run, "message deleted: retrying cannot help", delete_message=True)
            return Outcome.FAILED
        logger.error("transient failure", extra={"job_id": run.job_id, "error": repr(error)})
        run.log.add("transient failure; the job will be retried", error=f"{type(error).__name__}: {error}")
        backoff = min(60, RETRY_AFTER_SECONDS * run.received.receive_count)
        self.release(run, "given back", give_back_after=backoff)
        return Outcome.RETRY

    def interrupted(self, run: JobRun) -> Outcome:
        """A job whose heartbeat learned it was cancelled or taken over: its message deleted
        (the cancel, or the newer attempt, has the last word)."""
        if run.beat.cancelled.is_set():
            self.release(run, "cancelled; stopped", delete_message=True)
            return Outcome.CANCELLED
        self.release(run, "lease lost to another attempt; stopped without writing", delete_message=True)
        return Outcome.LEASE_LOST

    def shut_down(self, run: JobRun) -> Outcome:
        """The worker stops: the job goes back, its message visible at once."""
        self.release(run, "shutting down; job given back", give_back_after=0)
        return Outcome.GIVEN_BACK

    def release(
        self, run: JobRun, why: str, *, delete_message: bool = False, give_back_after: int | None = None
    ) -> None:
        """Let go of a job: its heartbeat stopped, its message deleted or made visible again
        (after `give_back_after` seconds, the job given back), its files closed, its log flushed."""
        run.beat.stop()  # before the message is touched
        run.log.add(why)
        try:
            if give_back_after is not None:
                self.give_back(run, give_back_after)
            elif delete_message:
                self.queue.delete(run.received.receipt_handle)
        finally:
            run.close()
            run.log.flush()

    def give_back(self, run: JobRun, visible_after: int) -> None:
        """The job queued again and its message visible after `visible_after` seconds."""
        run.beat.stop()
        try:
            self.repo.give_back(run.job_id, run.job.attempt)
        except InvalidTransition:  # cancelled or taken over: that state stands
            pass
        except Exception as exc:  # its lease runs out instead, and then it is claimable again
            logger.warning("could not give the job back", extra={"job_id": run.job_id, "error": repr(exc)})
        with contextlib.suppress(Exception):
            self.queue.extend(run.received.receipt_handle, visible_after)
