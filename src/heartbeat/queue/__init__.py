"""The queue: every statement on the job tables, and the only place with dialect-specific SQL.

``claims.py`` is the worker protocol's state changes (claim, extend, fail, release, requeue, leases
that ran out), ``results.py`` stores results, ``reads.py`` reads jobs, ``counts.py`` keeps the
counts per status, ``rows.py`` makes and removes job rows at registration, upload and deletion,
``pipeline.py`` settles and reopens the jobs of software built on other software, ``statements.py``
holds the hot statements' SQL, ``signal.py`` wakes waiting claims and ``waiting.py`` bounds them;
``flow.py`` holds a software to its limits and ``handoff.py`` hands freed room to a waiting claim;
``reaper.py`` fails jobs whose last lease ran out.
"""

from collections.abc import Callable

from heartbeat.db.database import Database
from heartbeat.db.models import Job, Software
from heartbeat.queue.claims import REQUEUABLE, ClaimOutcome, Claims
from heartbeat.queue.core import LEASE_EXPIRED, QueueCore
from heartbeat.queue.counts import Counts
from heartbeat.queue.flow import FlowControl
from heartbeat.queue.handoff import Handoffs
from heartbeat.queue.judging import PreparedResult, Verdict
from heartbeat.queue.pipeline import Pipelines
from heartbeat.queue.reads import THROUGHPUT_WINDOW_SECONDS, Reads, describe_job
from heartbeat.queue.results import Results
from heartbeat.queue.rows import Rows
from heartbeat.queue.signal import WaitingClaim, WorkSignal
from heartbeat.queue.statements import ClaimedJob


class JobQueue:
    """The job queue over the per-software job tables: ``JobQueue(database, clock)``, as its parts:
    ``claims`` (the worker protocol's state changes), ``results`` (storing results), ``reads``,
    ``rows`` (job rows made and removed, and the start-up upgrade), ``counters`` (the maintained
    counts) and ``pipelines`` (what follows downstream), over one shared :class:`QueueCore`."""

    def __init__(self, database: Database, clock: Callable[[], float]):
        self.core = QueueCore(database, clock)
        self.signal = self.core.signal
        self.outbox = self.core.outbox
        self.counters = Counts(self.core)
        self.pipelines = Pipelines(self.core, self.counters)
        self.flow = FlowControl(self.core)
        self.claims = Claims(self.core, self.pipelines, self.flow)
        self.handoffs = Handoffs(self.core, self.claims, self.flow)
        self.results = Results(self.core, self.pipelines, self.flow, self.handoffs)
        self.reads = Reads(self.core)
        self.rows = Rows(self.core, self.pipelines, self.counters)

    def get(self, software: Software, image_id: str) -> Job:
        """One job; :class:`NotFound` (404) if the software has none for that image."""
        return self.core.get(software, image_id)

    def upgrade(self) -> None:
        """Bring the job tables and their counts up to this release (:meth:`Rows.upgrade`)."""
        self.rows.upgrade()


__all__ = [
    "LEASE_EXPIRED",
    "REQUEUABLE",
    "THROUGHPUT_WINDOW_SECONDS",
    "ClaimOutcome",
    "ClaimedJob",
    "JobQueue",
    "PreparedResult",
    "Verdict",
    "WaitingClaim",
    "WorkSignal",
    "describe_job",
]
