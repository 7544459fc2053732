"""The queue: every statement on the job tables, and the only place with dialect-specific SQL.

``claims.py`` is the worker protocol's state changes (claim, extend, fail, release, requeue, leases
that ran out), ``results.py`` stores results, ``reads.py`` reads jobs, ``counts.py`` keeps the
counts per status, ``rows.py`` makes and removes job rows at registration, upload and deletion,
``pipeline.py`` settles and reopens the jobs of software built on other software, ``statements.py``
holds the hot statements' SQL, ``signal.py`` wakes waiting claims and ``waiting.py`` bounds them;
``reaper.py`` fails jobs whose last lease ran out.
"""

from heartbeat.queue.claims import REQUEUABLE, ClaimedJob, ClaimOutcome, Claims
from heartbeat.queue.core import LEASE_EXPIRED
from heartbeat.queue.counts import Counts
from heartbeat.queue.judging import PreparedResult, Verdict
from heartbeat.queue.reads import THROUGHPUT_WINDOW_SECONDS, Reads, describe_job
from heartbeat.queue.results import Results
from heartbeat.queue.rows import Rows
from heartbeat.queue.signal import WorkSignal


class JobQueue(Claims, Results, Reads, Rows, Counts):
    """The job queue over the per-software job tables: ``JobQueue(database, clock)``."""


__all__ = [
    "LEASE_EXPIRED",
    "REQUEUABLE",
    "THROUGHPUT_WINDOW_SECONDS",
    "ClaimOutcome",
    "ClaimedJob",
    "JobQueue",
    "PreparedResult",
    "Verdict",
    "WorkSignal",
    "describe_job",
]
