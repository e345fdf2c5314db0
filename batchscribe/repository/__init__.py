"""The jobs table's repositories, one per item type, the only code that reads or writes it:

- `jobs.JobRepository`: job records and their state machine (every status change one
  conditional write, fenced by `attempt` where a worker writes);
- `counters.Counters`: create rates per owner, claims per pool;
- `slots.OwnerSlots`: owners' running slots (taken in one transaction with a claim);
- `idempotency.IdempotencyRecords`: what a keyed create made (written with the job).

`dynamo` holds what they share: serialisation, the update builder, and the one mapping of a
failed condition.
"""

from batchscribe.repository.counters import Counters
from batchscribe.repository.idempotency import IdempotencyRecords
from batchscribe.repository.jobs import JobRepository, job_from_image, job_item
from batchscribe.repository.slots import OwnerSlots

__all__ = ["Counters", "IdempotencyRecords", "JobRepository", "OwnerSlots", "job_from_image", "job_item"]
