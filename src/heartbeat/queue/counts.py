"""Maintained job counts: read in one short statement whatever the number of jobs.

Every statement that changes a job's status adjusts ``job_counts`` in its own transaction, by its
affected row count (``QueueCore._count``). A software has ``COUNT_SLOTS`` rows for each of ``open``
(pending and claimed), ``done``, ``failed`` and ``skipped``, summed on read; how many open jobs are
claimed is counted along the status index (no more than the leases out), so that a claim, a release
and a lease taken over change no counter. :meth:`Counts.count_differences` compares the counts with
a recount (``heartbeat check``), :meth:`Counts.repair_counts` sets them to it (``check --fix``), and
:meth:`Counts.add_missing_counters` gives a database made before the counters existed its counters,
at start.
"""

from __future__ import annotations

from heartbeat.db.database import transactional
from heartbeat.db.models import JobCount, JobStatus, Software, job_model, job_table_name
from heartbeat.queue.core import COUNT_SLOTS, COUNTED, OPEN, QueueCore, counted_as
from heartbeat.queue.reads import count_by_status


class Counts(QueueCore):
    def create_counters(self, software_name: str) -> None:
        """Zeroed counter rows for a software about to be registered (those that exist are kept)."""
        rows = [
            {"software": software_name, "status": counter, "slot": slot, "count": 0}
            for counter in COUNTED
            for slot in range(COUNT_SLOTS)
        ]
        JobCount.insert_many(rows).on_conflict_ignore().execute()

    def counts(self, software: Software) -> dict[str, int]:
        """Jobs per status, ``{status: count}`` for every :class:`JobStatus`: the maintained counts, and
        the claimed jobs counted along the status index, in one statement (one consistent read)."""
        p, quote = self._database.param, self._database.quote
        sql = (
            f"SELECT status, SUM(count) FROM {quote(JobCount._meta.table_name)} WHERE software = {p} GROUP BY status"
            f" UNION ALL SELECT {p}, COUNT(*) FROM {quote(job_table_name(software.name))} WHERE status = {p}"
        )
        params = (software.name, JobStatus.CLAIMED.value, JobStatus.CLAIMED.value)
        # The counters are never named "claimed": that row is the index count.
        summed = {counter: int(total or 0) for counter, total in self._database.execute(sql, params).fetchall()}
        claimed = summed.pop(JobStatus.CLAIMED.value)
        counts = {str(status): summed.get(counted_as(status), 0) for status in JobStatus}
        return counts | {JobStatus.PENDING.value: summed.get(OPEN, 0) - claimed, JobStatus.CLAIMED.value: claimed}

    def recount(self, software: Software) -> dict[str, int]:
        """Jobs per status, counted row by row (its cost grows with the jobs: for checks, not requests)."""
        return {str(status): 0 for status in JobStatus} | count_by_status(job_model(software.name))

    def count_differences(self, software: Software) -> dict[str, tuple[int, int]]:
        """``{status: (maintained, recounted)}`` where the two differ (nothing when the counts are right).

        Both are read in one transaction, with the counter rows locked: no job can change status in
        between (every such change adjusts a counter row in its own transaction)."""
        return self._differences(software)

    @transactional
    def _differences(self, software: Software) -> dict[str, tuple[int, int]]:
        self._lock_counters(software)
        maintained, recounted = self.counts(software), self.recount(software)
        return {
            status: (maintained[status], recounted[status])
            for status in maintained
            if maintained[status] != recounted[status]
        }

    @transactional
    def repair_counts(self, software: Software) -> dict[str, int]:
        """Set the software's counts to a recount; returns it."""
        self.create_counters(software.name)
        self._lock_counters(software)
        recounted = self.recount(software)
        JobCount.update(count=0).where(JobCount.software == software.name).execute()
        totals: dict[str, int] = {}
        for status, count in recounted.items():
            totals[counted_as(JobStatus(status))] = totals.get(counted_as(JobStatus(status)), 0) + count
        for counter, count in totals.items():
            where = (JobCount.software == software.name) & (JobCount.status == counter) & (JobCount.slot == 0)
            JobCount.update(count=count).where(where).execute()
        return recounted

    def add_missing_counters(self) -> list[str]:
        """Counters, from a recount, for every registered software that has none (a database made
        before they existed); returns those software's names. Run at start."""
        counted = {row.software for row in JobCount.select(JobCount.software).distinct()}
        missing = [software for software in Software.select() if software.name not in counted]
        for software in missing:
            self.repair_counts(software)
        return [software.name for software in missing]

    def _lock_counters(self, software: Software) -> None:
        """Hold the software's counter rows until the transaction ends: every job transaction of it then
        waits (on MySQL; SQLite's write transactions exclude each other already)."""
        query = JobCount.select(JobCount.slot).where(JobCount.software == software.name)
        if self._database.features.mysql:
            list(query.for_update())
