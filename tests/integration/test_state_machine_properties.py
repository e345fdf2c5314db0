"""Hypothesis drives random sequences of job operations against the real DynamoDB
repository (on moto) and checks each outcome against an independent model of the rules:

- every operation succeeds exactly when the model says it may, and fails with the
  domain error the model predicts (InvalidTransition / StaleAttempt / JobNotFound);
- a terminal status is never left; `attempt` never decreases and grows by one per claim;
- a write carrying a stale attempt never changes anything.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import boto3
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule
from moto import mock_aws

from batchscribe.errors import InvalidTransition, JobNotFound, StaleAttempt
from batchscribe.models import ErrorInfo, InputInfo, Job, JobOptions, JobStatus, iso
from batchscribe.repository import JobRepository
from batchscribe_cli.provision import create_table
from harness.jobs import result_summary

P, Q, R = JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING
S, F, C = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED
TERMINAL = {S, F, C}
SUMMARY = result_summary()


@pytest.fixture(autouse=True, scope="module")
def _moto() -> Iterator[None]:
    # One moto for the whole run (starting it per example dominates the run time);
    # every example gets a table of its own.
    with mock_aws():
        yield


class ModelJob:
    def __init__(self) -> None:
        self.status = P
        self.attempt = 0
        self.lease = 0.0
        self.history: list[JobStatus] = [P]


class JobLifecycle(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_800_000_000.0
        self.table = "props-" + uuid.uuid4().hex[:8]
        create_table(boto3.client("dynamodb", region_name="us-east-1"), self.table)
        from batchscribe import aws

        aws.reset()
        self.repo = JobRepository(self.table, clock=lambda: self.now)
        self.model: dict[str, ModelJob] = {}

    # ---- helpers ---------------------------------------------------------------------

    def expect(
        self, job_id: str, ok: bool, call: Callable[[], Job], error: type[Exception] = InvalidTransition
    ) -> Job | None:
        before = self.repo.get(job_id)
        try:
            result = call()
        except (InvalidTransition, JobNotFound) as exc:
            assert not ok, f"model allowed it but the repository refused: {exc}"
            assert isinstance(exc, error), f"expected {error.__name__}, got {type(exc).__name__}: {exc}"
            assert self.repo.get(job_id) == before, "a refused write changed the record"
            return None
        assert ok, f"model refused it but the repository allowed it (status was {before.status})"
        return result

    def move(self, job_id: str, status: JobStatus) -> None:
        self.model[job_id].status = status
        self.model[job_id].history.append(status)

    def attempt_for(self, m: ModelJob, stale: bool) -> int:
        return m.attempt - 1 if stale else m.attempt

    def fenced_error(self, m: ModelJob, attempt: int, sources: set[JobStatus]) -> tuple[bool, type[Exception]]:
        if m.status not in sources:
            return False, InvalidTransition
        if attempt != m.attempt:
            return False, StaleAttempt
        return True, InvalidTransition

    # ---- rules -----------------------------------------------------------------------

    @initialize(target=jobs)
    def first(self) -> str:
        return self._new_job()

    @rule(target=jobs)
    def create(self) -> str:
        return self._new_job()

    def _new_job(self) -> str:
        job_id = uuid.uuid4().hex
        job = Job(
            job_id=job_id,
            owner="o",
            owner_key="k" * 32,
            status=P,
            created_at=iso(self.now),
            updated_at=iso(self.now),
            upload_expires_at=self.now + 100,
            input=InputInfo(
                key=f"uploads/x/{job_id}/input", filename="a.wav", content_type="audio/wav", declared_size=10
            ),
            options=JobOptions(),
            ttl=int(self.now) + 1000,
        )
        self.repo.create(job)
        self.model[job_id] = ModelJob()
        return job_id

    @rule(job_id=jobs)
    def enqueue(self, job_id: str) -> None:
        ok = self.model[job_id].status is P
        if self.expect(job_id, ok, lambda: self.repo.enqueue(job_id, 10)):
            self.move(job_id, Q)

    @rule(job_id=jobs, lease=st.sampled_from([10.0, 100.0]))
    def claim(self, job_id: str, lease: float) -> None:
        m = self.model[job_id]
        ok = m.status is Q or (m.status is R and m.lease < self.now)
        job = self.expect(job_id, ok, lambda: self.repo.claim(job_id, "w", lease))
        if job:
            assert job.attempt == m.attempt + 1
            m.attempt, m.lease = job.attempt, self.now + lease
            self.move(job_id, R)

    @rule(job_id=jobs)
    def duplicate_claim(self, job_id: str) -> None:
        """Two workers got the same message: at most one claim can win while a lease is live."""
        m = self.model[job_id]
        if m.status is not Q:
            return
        first = self.repo.claim(job_id, "w1", 50.0)
        m.attempt, m.lease = first.attempt, self.now + 50.0
        self.move(job_id, R)
        self.expect(job_id, False, lambda: self.repo.claim(job_id, "w2", 50.0))

    @rule(job_id=jobs, stale=st.booleans(), progress=st.integers(-5, 120))
    def heartbeat(self, job_id: str, stale: bool, progress: int) -> None:
        m = self.model[job_id]
        attempt = self.attempt_for(m, stale)
        ok, err = self.fenced_error(m, attempt, {R})
        job = self.expect(job_id, ok, lambda: self.repo.heartbeat(job_id, attempt, 100.0, progress), err)
        if job:
            assert 0 <= job.progress <= 100
            m.lease = self.now + 100.0

    @rule(job_id=jobs, stale=st.booleans())
    def succeed(self, job_id: str, stale: bool) -> None:
        m = self.model[job_id]
        attempt = self.attempt_for(m, stale)
        ok, err = self.fenced_error(m, attempt, {R})
        if self.expect(job_id, ok, lambda: self.repo.succeed(job_id, attempt, SUMMARY, None), err):
            self.move(job_id, S)

    @rule(job_id=jobs, stale=st.booleans(), fenced=st.booleans())
    def fail(self, job_id: str, stale: bool, fenced: bool) -> None:
        m = self.model[job_id]
        attempt = self.attempt_for(m, stale) if fenced else None
        err: type[Exception] = InvalidTransition
        if attempt is None:
            ok = m.status not in TERMINAL
        else:
            ok, err = self.fenced_error(m, attempt, {P, Q, R})
        error = ErrorInfo(code="x", message="y")
        if self.expect(job_id, ok, lambda: self.repo.fail(job_id, error, attempt=attempt), err):
            self.move(job_id, F)

    @rule(job_id=jobs, stale=st.booleans())
    def give_back(self, job_id: str, stale: bool) -> None:
        m = self.model[job_id]
        attempt = self.attempt_for(m, stale)
        ok, err = self.fenced_error(m, attempt, {R})
        if self.expect(job_id, ok, lambda: self.repo.give_back(job_id, attempt), err):
            self.move(job_id, Q)

    @rule(job_id=jobs)
    def requeue_expired(self, job_id: str) -> None:
        m = self.model[job_id]
        ok = m.status is R and m.lease < self.now
        if self.expect(job_id, ok, lambda: self.repo.requeue_expired(job_id, m.attempt)):
            self.move(job_id, Q)

    @rule(job_id=jobs)
    def cancel(self, job_id: str) -> None:
        ok = self.model[job_id].status not in TERMINAL
        if self.expect(job_id, ok, lambda: self.repo.cancel(job_id)):
            self.move(job_id, C)

    @rule(job_id=consumes(jobs))
    def forget(self, job_id: str) -> None:
        """Stop driving a job (keeps the bundle small); its record is still checked."""

    @rule(seconds=st.sampled_from([1.0, 20.0, 200.0]))
    def advance_time(self, seconds: float) -> None:
        self.now += seconds

    # ---- invariants ------------------------------------------------------------------

    @invariant()
    def records_match_the_model(self) -> None:
        for job_id, m in self.model.items():
            job = self.repo.get(job_id)
            assert job.status is m.status
            assert job.attempt == m.attempt
            seen_terminal = [s for s in m.history if s in TERMINAL]
            assert len(seen_terminal) <= 1 and (not seen_terminal or m.history[-1] is seen_terminal[0])
            if job.status is R:
                assert job.lease_expires_at is not None
            if job.status in TERMINAL:
                assert job.finished_at is not None


JobLifecycle.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # CI: the same sequences on every run, so a red run is reproducible; elsewhere new ones each run
    derandomize=bool(os.environ.get("CI")),
)
TestJobLifecycle = JobLifecycle.TestCase
