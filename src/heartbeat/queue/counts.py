"""Maintained job counts: read in one short statement whatever the number of jobs.

Every statement that changes a job's status adjusts ``job_counts`` in its own transaction, by its
affected row count (``QueueCore.count``). A software has ``COUNT_SLOTS`` rows for each of ``open``
(pending and claimed), ``done``, ``failed`` and ``skipped``, summed on read; how many open jobs are
claimed is counted along the status index (no more than the leases out), so that a claim, a release
and a lease taken over change no counter. :meth:`Counts.count_differences` compares the counts with
a recount (``heartbeat check``), :meth:`Counts.repair_counts` sets them to it (``check --fix``), and
:meth:`Counts.add_missing_counters` gives a database made before the counters existed its counters,
at start.
"""

from __future__ import annotations

import peewee

from heartbeat.db.database import transactional
from heartbeat.db.models import JobCount, JobStatus, Software, job_model, job_table_name
from heartbeat.queue.core import COUNTED, DONE_AT, OPEN, QueuePart, counted_as


class Counts(QueuePart):
    """The maintained job counts of each software."""

    def create_counters(self, software_name: str, version: str) -> None:
        """Zeroed counter rows for a software about to be registered, or to get a new ``version``
        (those that exist are kept)."""
        self._core.zero_counters(software_name, [*COUNTED, counted_as(JobStatus.DONE, version)])

    def counts(self, software: Software) -> dict[str, int]:
        """Jobs per status, ``{status: count}`` for every :class:`JobStatus`, and ``outdated`` (done
        jobs whose result came from another version than the software's): the maintained counts, and
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
        return _as_counts(summed, claimed, software.version)

    def recount(self, software: Software) -> dict[str, int]:
        """:meth:`counts`, counted row by row (its cost grows with the jobs: for checks, not requests)."""
        by_counter = self._recount_counters(software)
        return _as_counts(by_counter, self._claimed(software), software.version)

    def _recount_counters(self, software: Software) -> dict[str, int]:
        job = job_model(software.name)
        query = job.select(job.status, job.version, peewee.fn.COUNT(job.image_id)).group_by(job.status, job.version)
        by_counter: dict[str, int] = {}
        rows: list[tuple[str, str | None, int]] = list(query.tuples())  # type: ignore[arg-type]  # stubs: models
        for status, version, count in rows:
            counter = counted_as(JobStatus(status), version)
            by_counter[counter] = by_counter.get(counter, 0) + count
        return by_counter

    def _claimed(self, software: Software) -> int:
        job = job_model(software.name)
        return int(job.select().where(job.status == JobStatus.CLAIMED).count())

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
        """Set the software's counters to a recount; returns the recounted counts."""
        self.create_counters(software.name, software.version)
        self._lock_counters(software)
        by_counter = self._recount_counters(software)
        self._core.zero_counters(software.name, list(by_counter))
        JobCount.update(count=0).where(JobCount.software == software.name).execute()
        for counter, count in by_counter.items():
            where = (JobCount.software == software.name) & (JobCount.status == counter) & (JobCount.slot == 0)
            JobCount.update(count=count).where(where).execute()
        return _as_counts(by_counter, self._claimed(software), software.version)

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


def _as_counts(by_counter: dict[str, int], claimed: int, version: str) -> dict[str, int]:
    """Counts per status and ``outdated`` from the counters' totals (``{counter: count}``)."""
    done = {counter: count for counter, count in by_counter.items() if counter.startswith(DONE_AT)}
    counts = {str(status): by_counter.get(counted_as(status), 0) for status in JobStatus}
    counts[JobStatus.PENDING.value] = by_counter.get(OPEN, 0) - claimed
    counts[JobStatus.CLAIMED.value] = claimed
    counts[JobStatus.DONE.value] = sum(done.values())
    counts["outdated"] = sum(count for counter, count in done.items() if counter != counted_as(JobStatus.DONE, version))
    return counts
