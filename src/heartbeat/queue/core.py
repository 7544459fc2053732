"""What every part of the job queue shares: the database, the clock, the wake-up signal, and each
software's prepared statements."""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

from heartbeat.db.database import Database
from heartbeat.db.models import Job, JobCount, JobStatus, Software, job_model
from heartbeat.errors import NotFound, StaleToken
from heartbeat.events.outbox import Outbox
from heartbeat.queue.signal import WorkSignal
from heartbeat.queue.statements import JobTable, Settings

LEASE_EXPIRED = "lease expired"  # the error of a job whose last lease ran out
# Rows per (software, counted status) in ``job_counts``: a transaction adjusts one, picked at random,
# so that concurrent submits of one software seldom wait on each other's counter row.
COUNT_SLOTS = 16
# Pending and claimed jobs are counted together, as open: a claim (pending -> claimed), a release and
# a lease taken over change no counter, and the hottest path pays nothing. How many of them are
# claimed is counted on read along the status index: at most as many as there are leases out.
# Done jobs are counted per version of their result ("done@<version>"), so that how many are
# outdated (of another version than the software's) is read off the counters too.
OPEN = "open"
COUNTED = (OPEN, JobStatus.FAILED.value, JobStatus.SKIPPED.value)
DONE_AT = "done@"


def counted_as(status: JobStatus | str, version: str | None = None) -> str:
    """The counter a job of ``status`` (with a result of ``version``, when done) is counted in; a
    text is a counter's name already."""
    if not isinstance(status, JobStatus):
        return status
    if status == JobStatus.DONE:
        return f"{DONE_AT}{version}"
    return OPEN if status in (JobStatus.PENDING, JobStatus.CLAIMED) else status.value


def new_token() -> str:
    """A lease token: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


class QueueCore:
    """What every part of the queue shares: the database, the clock, the signal that wakes waiting
    claims, the job tables' statements and the maintained counts."""

    def __init__(self, database: Database, clock: Callable[[], float], signal: WorkSignal | None = None):
        self._database = database
        self.database = database
        self.clock = clock
        self.signal = signal or WorkSignal()
        self.outbox = Outbox(database, clock)
        self._tables: dict[str, JobTable] = {}
        self._count_sql: dict[int, str] = {}  # by how many statuses a change touches

    def table(self, software: Software) -> JobTable:
        """The statements of the software's job table (made once)."""
        table = self._tables.get(software.name)
        if table is None:
            table = self._tables[software.name] = JobTable(software.name, self._database)
        return table

    def count(self, software_name: str, changes: Mapping[JobStatus | str, int]) -> None:
        """Adjust the software's maintained counts by ``changes`` (``{status or counter: +n or -n}``, the
        row counts of the statement that just changed those jobs; done jobs by their counter,
        :func:`counted_as`); call in that statement's transaction."""
        by_counter: dict[str, int] = {}
        for status, delta in changes.items():
            by_counter[counted_as(status)] = by_counter.get(counted_as(status), 0) + delta
        changed = [(counter, delta) for counter, delta in by_counter.items() if delta]
        if not changed:
            return
        sql = self._count_sql.get(len(changed))
        if sql is None:
            p = self._database.param
            sql = self._count_sql[len(changed)] = (
                f"UPDATE {self._database.quote(JobCount._meta.table_name)} SET count = count + CASE status"
                f" {' '.join(f'WHEN {p} THEN {p}' for _ in changed)} END"
                f" WHERE software = {p} AND slot = {p} AND status IN {self._database.params(len(changed))}"
            )
        params: list[object] = [value for counter, delta in changed for value in (counter, delta)]
        params += [software_name, self._slot(), *(counter for counter, _delta in changed)]
        if self._database.execute(sql, params).rowcount < len(changed):
            # A counter this software never had (the first result of a version): made, then counted.
            self.zero_counters(software_name, [counter for counter, _delta in changed])
            self._database.execute(sql, params)

    def _slot(self) -> int:
        """A counter row to change, at random; on a Galera cluster, one of this node's own (slots
        ``index``, ``index + size``, ...): two nodes' commits never change one counter row, which
        would make one of them lose at certification."""
        share = self._database.features.node_share
        if share is None or share[1] > COUNT_SLOTS:
            return random.randrange(COUNT_SLOTS)
        index, size = share
        return index + size * random.randrange((COUNT_SLOTS - index + size - 1) // size)

    def zero_counters(self, software_name: str, counters: Sequence[str]) -> None:
        """Zeroed rows for these counters of a software (those that exist are kept)."""
        rows = [
            {"software": software_name, "status": counter, "slot": slot, "count": 0}
            for counter in counters
            for slot in range(COUNT_SLOTS)
        ]
        JobCount.insert_many(rows).on_conflict_ignore().execute()

    def current(self, software: Software) -> Settings:
        """The software's changeable settings as they are now (another process may have changed them)."""
        settings = self.table(software).settings(software.id)
        if settings is None:
            raise NotFound(f"no software named {software.name!r}")
        return settings

    def get(self, software: Software, image_id: str) -> Job:
        """One job; :class:`NotFound` (404) if the software has none for that image."""
        job = job_model(software.name)
        row = job.get_or_none(job.image_id == image_id)
        if row is None:
            raise NotFound(f"{software.name} has no job for image {image_id!r}")
        return row

    def raise_missing_or_stale(self, software: Software, image_id: str) -> NoReturn:
        """:class:`NotFound` when the software has no job for the image, else :class:`StaleToken`."""
        self.get(software, image_id)
        raise StaleToken()


class QueuePart:
    """A part of the queue (claims, results, reads, rows, counts, pipelines) over the shared
    :class:`QueueCore`; the parts that need another part are given it."""

    def __init__(self, core: QueueCore):
        self._core = core
        self._database = core.database
        self._clock = core.clock
        self.signal = core.signal
        self._outbox = core.outbox
