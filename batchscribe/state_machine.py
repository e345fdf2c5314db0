"""The job state machine, as data. The repository turns each entry into the condition of
one DynamoDB UpdateItem; nothing else decides which transitions exist.

    pending -> queued -> running -> succeeded | failed
    queued -> queued               (the sweeper re-sent a message nobody took: redrive)
    running -> queued              (a worker gives the job back, or its lease expired)
    any non-terminal -> cancelled | failed
    terminal states are never left
"""

from __future__ import annotations

from enum import StrEnum

from batchscribe.models import ACTIVE_STATUSES, JobStatus


class Transition(StrEnum):
    ENQUEUE = "enqueue"
    CLAIM = "claim"
    HEARTBEAT = "heartbeat"
    GIVE_BACK = "give_back"
    REQUEUE = "requeue"
    REDRIVE = "redrive"
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"


P, Q, R = JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING

# transition -> (allowed source statuses, target status). A worker's own writes
# (heartbeat, give_back, succeed, and fail with an attempt) are also fenced by `attempt`.
TRANSITIONS: dict[Transition, tuple[frozenset[JobStatus], JobStatus]] = {
    Transition.ENQUEUE: (frozenset({P}), Q),
    # claim also takes over a `running` job whose lease has expired (its worker died)
    Transition.CLAIM: (frozenset({Q, R}), R),
    Transition.HEARTBEAT: (frozenset({R}), R),
    Transition.GIVE_BACK: (frozenset({R}), Q),
    Transition.REQUEUE: (frozenset({R}), Q),
    Transition.REDRIVE: (frozenset({Q}), Q),
    Transition.SUCCEED: (frozenset({R}), JobStatus.SUCCEEDED),
    Transition.FAIL: (ACTIVE_STATUSES, JobStatus.FAILED),
    Transition.CANCEL: (ACTIVE_STATUSES, JobStatus.CANCELLED),
}


def sources(transition: Transition) -> frozenset[JobStatus]:
    return TRANSITIONS[transition][0]


def target(transition: Transition) -> JobStatus:
    return TRANSITIONS[transition][1]


def allowed(transition: Transition, status: JobStatus) -> bool:
    return status in sources(transition)
