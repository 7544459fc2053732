"""The queue: every job statement, and the only place with dialect-specific SQL.

``claims.py`` is the worker protocol (claim, extend, submit, fail, release, requeue), ``rows.py``
makes and removes job rows at upload, registration and deletion, ``signal.py`` wakes waiting claims.
"""

from heartbeat.queue.claims import (
    LEASE_EXPIRED,
    ClaimedJob,
    ClaimOutcome,
    JobQueue,
    PreparedResult,
    describe_job,
)
from heartbeat.queue.rows import backfill_jobs, create_jobs, delete_image_rows, reprioritize
from heartbeat.queue.signal import WorkSignal

__all__ = [
    "LEASE_EXPIRED",
    "ClaimOutcome",
    "ClaimedJob",
    "JobQueue",
    "PreparedResult",
    "WorkSignal",
    "backfill_jobs",
    "create_jobs",
    "delete_image_rows",
    "describe_job",
    "reprioritize",
]
