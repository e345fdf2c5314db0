"""Admission: receiving, claiming and preparing jobs beside the model loop.

One thread receives messages while the gate has room and the disk budget fits another job of the
pool's largest size (disk.py; no more messages than that many; a long poll: it never holds up a
batch); each message reserves a place at the gate and is claimed on the claiming pool, side by
side with the others (each claim is a few AWS round trips: one at a time, 8 claims took 1.3 s on
the local stack and the first batch ran with the two claimed by then), while the next receive
asks for what room is left (SQS gives at most 10 a receive: a burst of 16 was claimed in two
rounds 0.7 s apart, and the second missed the first batch); each job is claimed (claiming.py:
with the job's disk reserved), its log and heartbeat started, and handed to the preparing pool;
once prepared (preparing.py) the job goes to the loop through the gate. A job that cannot go on
(its preparation failed, it was cancelled or taken over meanwhile, or the worker stops) is let
go of where it is, on that thread (finishing.py): the loop only ever sees ready jobs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from batchscribe.models import Job
from batchscribe.queue import ClassQueues, Received
from batchscribe.sources import FetchStopped
from gpu_container.worker.claiming import Claimed, Claimer
from gpu_container.worker.disk import DiskBudget, JobFiles
from gpu_container.worker.finishing import Finisher
from gpu_container.worker.handoff import Gate
from gpu_container.worker.preparing import Preparer
from gpu_container.worker.running import JobRun, Outcome, logger

MAX_MESSAGES = 10  # SQS's most per receive
CLAIM_THREADS = 16  # claims made at once (and jobs prepared): a burst of 16 on 8 threads took two rounds
EMPTY_POLL_PAUSE = 0.05  # seconds between short polls (poll_seconds = 0) that found nothing
RECEIVE_ERROR_PAUSE = 1.0


class Admission(threading.Thread):
    def __init__(
        self,
        gate: Gate[JobRun],
        queue: ClassQueues,
        claimer: Claimer,
        start: Callable[[Job, Received, JobFiles], JobRun],
        preparer: Preparer,
        finisher: Finisher,
        disk: DiskBudget,
        *,
        poll_seconds: int,
        record: Callable[[Outcome], None],
        preparing_threads: int = CLAIM_THREADS,
        claim_threads: int = CLAIM_THREADS,
    ) -> None:
        super().__init__(name="admission", daemon=True)
        self.gate, self.queue, self.claimer, self.start_run = gate, queue, claimer, start
        self.preparer, self.finisher, self.disk = preparer, finisher, disk
        self._disk_full = False
        self.poll_seconds = poll_seconds
        self.record = record
        self.pool = ThreadPoolExecutor(max_workers=preparing_threads, thread_name_prefix="preparing")
        self.claims = ThreadPoolExecutor(max_workers=claim_threads, thread_name_prefix="claiming")
        self._lock = threading.Lock()
        self._preparing = 0  # claimed jobs not yet handed to the loop (or let go)
        self._last_claim = -float("inf")  # time.monotonic() of the latest claim

    def arriving(self, within: float) -> bool:
        """Jobs claimed under `within` seconds ago are still being prepared: the loop's batch
        short of B may wait a moment for them (batches.Batches `arriving`)."""
        with self._lock:
            return self._preparing > 0 and time.monotonic() - self._last_claim < within

    def run(self) -> None:
        try:
            while not self.gate.closed:
                room = self.gate.wait_for_room(timeout=0.5)
                # claims under way have not reserved their disk yet
                fit = self._disk_room() - self.gate.claiming if room > 0 else 0
                if fit > 0:
                    self.receive(min(room, fit))
                else:  # full: what a long poll still brought is another worker's to take
                    self._put_back_kept()
                    if room > 0:  # the disk is: until a job's files are removed
                        self.disk.wait_for_release(timeout=0.5)
        finally:
            self._put_back_kept(stop=True)  # the polls under way end (at most poll_seconds)
            self.claims.shutdown(wait=True)
            self.pool.shutdown(wait=True)  # jobs being prepared end given back, or handed over

    def _disk_room(self) -> int:
        """How many more jobs the free disk takes (logged when that turns to none and back)."""
        fit = self.disk.jobs_that_fit()
        if (fit == 0) != self._disk_full:
            self._disk_full = fit == 0
            logger.info(
                "disk full: receiving no more jobs until a held job's files are removed"
                if self._disk_full
                else "disk has room again: receiving",
                extra={"held": len(self.disk.held), "budget_bytes": self.disk.budget(), "floor": self.disk.floor},
            )
        return fit

    def _put_back_kept(self, stop: bool = False) -> None:
        try:
            self.queue.put_back_kept(stop=stop)
        except Exception as exc:  # their visibility runs out instead
            logger.warning("could not put messages back", extra={"error": f"{type(exc).__name__}: {exc}"})

    def receive(self, room: int) -> None:
        # a long poll, cut short while idle so that the idle exit is not delayed by it
        wait = int(max(0, min(self.poll_seconds, self.gate.idle_left())))
        try:
            messages = self.queue.receive(wait_seconds=wait, max_messages=min(MAX_MESSAGES, room))
        except Exception as exc:
            logger.warning("could not receive messages", extra={"error": f"{type(exc).__name__}: {exc}"})
            self.gate.wait_closed(RECEIVE_ERROR_PAUSE)
            return
        # each claimed side by side, its place at the gate reserved here, so the next receive
        # (at once, while these claims are made) asks for no more than the room they leave
        for received in messages:
            if self.gate.reserve():
                self.claims.submit(self._take, received)
            else:
                self._put_back(received)
        if not messages and wait == 0:
            self.gate.wait_closed(EMPTY_POLL_PAUSE)

    def take(self, received: Received) -> Outcome:
        """Claim one message's job and start preparing it, or say why not."""
        if not self.gate.reserve():
            self._put_back(received)
            return Outcome.PUT_BACK
        return self._take(received)

    def _take(self, received: Received) -> Outcome:
        """`take` with the job's place at the gate reserved."""
        try:
            claimed = self.claimer.claim(received)
        except Exception:
            self.gate.unreserve()
            logger.exception("could not claim a job", extra={"message_id": received.message_id})
            return Outcome.CLAIM_FAILED
        if isinstance(claimed, Outcome):
            self.gate.unreserve()
            self.record(claimed)
            return claimed
        run = self._start(claimed, received)
        if run is None:
            return Outcome.CLAIM_FAILED
        if self.gate.claimed():
            with self._lock:
                self._preparing += 1
                self._last_claim = time.monotonic()
            self.pool.submit(self.prepare, run)
        else:  # the worker stopped while the claim was made: straight back
            self._let_go(run, self.finisher.shut_down)
        self.record(Outcome.CLAIMED)
        return Outcome.CLAIMED

    def _start(self, claimed: Claimed, received: Received) -> JobRun | None:
        try:
            return self.start_run(claimed.job, received, claimed.files)
        except Exception:  # not held: its lease runs out, and the sweeper queues it again
            claimed.files.release()
            self.gate.unreserve()
            logger.exception("could not start a claimed job", extra={"job_id": claimed.job.job_id})
            return None

    def prepare(self, run: JobRun) -> None:
        """On the preparing pool: download and probe, then hand the job to the loop (or let
        go of it here)."""
        try:
            self.preparer.prepare(run)
            error: BaseException | None = None
        except Exception as exc:
            error = exc
        finally:
            with self._lock:
                self._preparing -= 1
        if run.beat.interrupted:  # cancelled or taken over meanwhile: whatever the preparing did
            self._let_go(run, self.finisher.interrupted)
        elif isinstance(error, FetchStopped) or (error is None and not self.gate.hand_over(run)):
            self._let_go(run, self.finisher.shut_down)  # the worker stops
        elif error is not None:
            failure = error
            self._let_go(run, lambda r: self.finisher.failed(r, failure))

    def _let_go(self, run: JobRun, how: Callable[[JobRun], Outcome]) -> None:
        try:
            self.record(how(run))
        except Exception:
            logger.exception("could not let go of a job", extra={"job_id": run.job_id})
        finally:
            self.gate.done()

    def _put_back(self, received: Received) -> None:
        try:
            self.queue.extend(received.receipt_handle, 0)  # not ours to take any more
        except Exception as exc:
            logger.warning("could not put a message back", extra={"error": f"{type(exc).__name__}: {exc}"})
