"""The operator's statistics (GET /admin/stats, `batchscribe stats`): which jobs fail and how,
how many attempts a success takes per pool and model, which queued jobs have waited longest, and
how many job records expire in the next day. Aggregates and job ids only: no owner, no file
name; only principals granted the stats policy may call the route (stacks/constructs/api.py).

Cost: the ended and attempts counts are read from the hourly counter items (one item read per
hour of the window: 24 for a day, however many jobs ran); the expiring count from the next 24
hours' items; the waiting jobs from the sweep index's queued partition (job ids only) and their
records, at most `WAITING_SCAN` of them (a backlog larger than that is said to be so).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from batchscribe.models import Priority, iso
from batchscribe.outcomes import Dimensions, PoolName, seconds_between
from batchscribe.repository import JobRepository
from batchscribe.repository.stats import ATTEMPTS, ENDED, EXPIRING, SEP, StatsCounters, hour_of
from batchscribe.resources import STATS_DEFAULT_HOURS, STATS_DEFAULT_OLDEST, STATS_MAX_HOURS

WAITING_SCAN = 2000  # queued jobs read at most for the oldest waiting


class FailureCount(BaseModel):
    code: str
    pool: str
    model: str
    jobs: int


class AttemptsToSucceed(BaseModel):
    pool: str
    model: str
    jobs: int = Field(description="jobs that succeeded in the window")
    mean: float = Field(description="mean attempts a success took")
    distribution: dict[str, int] = Field(description="attempts -> jobs that succeeded on that attempt")


class WaitingJob(BaseModel):
    job_id: str
    priority: Priority
    pool: PoolName
    attempt: int = Field(description="attempts it had before this wait (0: never started)")
    queued_at: str | None
    waiting_seconds: float = Field(description="since the job was queued (its upload accepted)")


class StatsReport(BaseModel):
    generated_at: str
    since: str = Field(description="the window's start: the hour it falls in (counts are kept per hour)")
    hours: int
    ended: dict[str, int] = Field(description="jobs that ended in the window, by status")
    failures: list[FailureCount] = Field(description="failed jobs by error code, pool and model, most first")
    attempts_to_succeed: list[AttemptsToSucceed]
    oldest_waiting: list[WaitingJob] = Field(description="queued jobs, longest wait first")
    queued_read: int = Field(description="queued jobs read to find the oldest")
    queued_more: bool = Field(description="more jobs are queued than were read (the oldest are among those read)")
    expiring_next_day: int = Field(description="job records whose TTL falls in the next 24 hours")


@dataclass
class _Tally:
    ended: Counter[str] = field(default_factory=Counter)
    failures: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    attempts: dict[tuple[str, str], Counter[int]] = field(default_factory=dict)
    expiring: int = 0

    def add(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            kind, *parts = name.split(SEP)
            if kind == ENDED and len(parts) == 4:
                status, pool, model, code = parts
                self.ended[status] += n
                if status == "failed":
                    self.failures[(code, pool, model)] += n
            elif kind == ATTEMPTS and len(parts) == 3:
                pool, model, attempts = parts
                self.attempts.setdefault((pool, model), Counter())[int(attempts)] += n

    def attempts_to_succeed(self) -> list[AttemptsToSucceed]:
        out = []
        for (pool, model), dist in sorted(self.attempts.items()):
            jobs = sum(dist.values())
            mean = sum(a * n for a, n in dist.items()) / jobs if jobs else 0.0
            out.append(
                AttemptsToSucceed(
                    pool=pool,
                    model=model,
                    jobs=jobs,
                    mean=round(mean, 3),
                    distribution={str(a): n for a, n in sorted(dist.items())},
                )
            )
        return out


@dataclass
class OperatorStats:
    repo: JobRepository
    counters: StatsCounters
    dims: Dimensions
    clock: Callable[[], float] = time.time

    @classmethod
    def for_table(cls, table_name: str, dims: Dimensions, clock: Callable[[], float] = time.time) -> OperatorStats:
        return cls(JobRepository(table_name, clock), StatsCounters(table_name, clock), dims, clock)

    def report(self, hours: int = STATS_DEFAULT_HOURS, oldest: int = STATS_DEFAULT_OLDEST) -> StatsReport:
        hours = max(1, min(hours, STATS_MAX_HOURS))
        now = self.clock()
        current = hour_of(now)
        window = _Tally()
        for _, counts in self.counters.hours(current - hours + 1, current):
            window.add(counts)
        expiring = sum(c.get(EXPIRING, 0) for _, c in self.counters.hours(current, current + 24))
        waiting, read, more = self._oldest_waiting(now, oldest)
        return StatsReport(
            generated_at=iso(now),
            since=iso((current - hours + 1) * 3600),
            hours=hours,
            ended=dict(sorted(window.ended.items())),
            failures=[
                FailureCount(code=code, pool=pool, model=model, jobs=n)
                for (code, pool, model), n in sorted(window.failures.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            attempts_to_succeed=window.attempts_to_succeed(),
            oldest_waiting=waiting,
            queued_read=read,
            queued_more=more,
            expiring_next_day=expiring,
        )

    def _oldest_waiting(self, now: float, limit: int) -> tuple[list[WaitingJob], int, bool]:
        jobs, more = self.repo.waiting(WAITING_SCAN)
        now_iso = iso(now)
        waiting = [
            WaitingJob(
                job_id=job.job_id,
                priority=job.priority,
                pool=self.dims.of(job)[0],
                attempt=job.attempt,
                queued_at=job.queued_at,
                waiting_seconds=seconds_between(job.queued_at or job.created_at, now_iso) or 0.0,
            )
            for job in jobs
        ]
        waiting.sort(key=lambda w: (-w.waiting_seconds, w.job_id))
        return waiting[:limit], len(jobs), more
