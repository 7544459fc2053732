"""Storing results: one path for a single submit and for a batch.

The jobs a submit names are read first with a lock on their rows (``FOR UPDATE`` on MySQL; SQLite's
``BEGIN IMMEDIATE`` transaction holds every write lock already), each result is judged on what its
job holds, and the accepted ones are marked done in one statement per kind (on time, or late after
the last lease ran out), with their extra-table rows, in the same transaction.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

import peewee

from heartbeat.catalog.extra_rows import prepare_rows
from heartbeat.db.database import transactional
from heartbeat.db.models import Job, JobStatus, Software, extra_table_model
from heartbeat.errors import HeartbeatError, NotFound, StaleToken, TooLarge
from heartbeat.queue.core import LEASE_EXPIRED, counted_as
from heartbeat.queue.pipeline import Pipelines
from heartbeat.queue.statements import Settings


class Verdict(enum.StrEnum):
    """How a batch judged one of its results."""

    DONE = JobStatus.DONE.value  # stored (now, or by the same submit before)
    STALE = "stale"  # its token no longer holds the job
    INVALID = "invalid"  # refused as the single submit would refuse it (unknown job, bad rows, too large)


@dataclasses.dataclass(frozen=True)
class PreparedResult:
    """A result checked and ready to store: its rows mapped onto the extra tables' models."""

    image_id: str
    token: str
    info: Any
    rows: list[tuple[Any, list[dict[str, Any]]]]


class Results(Pipelines):
    def prepare_result(self, software: Software, image_id: str, token: str, info: Any, rows: Any) -> PreparedResult:
        """A result checked before any database work: its size (:class:`TooLarge`, 413, past what the
        server takes in one statement), and its rows against the extra tables (:class:`InvalidInput`)."""
        limit = self._database.features.max_result_bytes
        if limit is not None:
            size = len(json.dumps(info)) + (len(json.dumps(rows)) if rows else 0)
            if size > limit:
                raise TooLarge(f"the result takes {size} bytes as JSON; this database takes at most {limit}")
        return PreparedResult(image_id, token, info, prepare_rows(software, rows))

    def submit(self, software: Software, image_id: str, token: str, info: Any, rows: Any = None) -> Job:
        """Store one result and its extra-table rows together, or change nothing; returns the job.

        :class:`StaleToken` (409) when the token no longer holds the job, :class:`NotFound` (404)
        when the software has no job for that image.
        """
        [outcome] = self._store(software, [self.prepare_result(software, image_id, token, info, rows)])
        if isinstance(outcome, HeartbeatError):
            raise outcome
        return outcome

    def submit_many(self, software: Software, results: list[PreparedResult]) -> list[HeartbeatError | None]:
        """Store many results in one transaction, each judged on its own: None where it was stored,
        else the error :meth:`submit` would have raised for it."""
        outcomes = self._store(software, results) if results else []
        return [outcome if isinstance(outcome, HeartbeatError) else None for outcome in outcomes]

    @transactional
    def _store(self, software: Software, results: list[PreparedResult]) -> list[Job | HeartbeatError]:
        table = self._table(software)
        now = self._clock()
        held = table.read_locked(
            sorted({result.image_id for result in results}), lock=self._database.features.update_lock
        )
        outcomes: list[Job | HeartbeatError] = []
        on_time: dict[str, PreparedResult] = {}
        late: dict[str, PreparedResult] = {}
        for result in results:
            job = held.get(result.image_id)
            earlier = on_time.get(result.image_id) or late.get(result.image_id)
            if job is None:
                outcomes.append(NotFound(f"{software.name} has no job for image {result.image_id!r}"))
            elif earlier is not None or job.token != result.token:
                # Twice in one batch is stored once; a token that no longer holds the job is stale.
                same = earlier is not None and earlier.token == result.token
                outcomes.append(job if same else StaleToken())
            elif job.status == JobStatus.CLAIMED:
                on_time[result.image_id] = result
                outcomes.append(self._stored(job, result, now))
            elif (job.status, job.error) == (JobStatus.FAILED, LEASE_EXPIRED):
                late[result.image_id] = result  # its last lease ran out, but nobody else took it: taken
                outcomes.append(self._stored(job, result, now))
            elif job.status in (JobStatus.DONE, JobStatus.PENDING):
                # That very result, stored already (a retry after a lost COMMIT); pending: stored, then
                # reopened by a new version (only a stored result leaves its token on a pending job).
                outcomes.append(job)
            else:
                outcomes.append(StaleToken())
        # Read with a shared lock: a change of version commits before this read (which then sees it),
        # or waits for this transaction, and its reopening then finds these results done.
        current = table.settings(software.id, lock=self._database.features.share_lock)
        if current is None:
            raise NotFound(f"no software named {software.name!r}")
        outdated = self._arrived_outdated(current, [held[image_id] for image_id in (*on_time, *late)])
        changes: dict[JobStatus | str, int] = {}
        for group, late_error in ((on_time, None), (late, LEASE_EXPIRED)):
            items = [(result.image_id, result.token, result.info) for result in group.values()]
            if items and table.store_results(items, now, late_error=late_error) != len(items):
                raise RuntimeError("a job changed while this transaction held its row locked")
            before = JobStatus.FAILED if late_error else JobStatus.CLAIMED
            changes[before] = changes.get(before, 0) - len(items)
            for image_id in group:
                version = held[image_id].claimed_version
                after = JobStatus.PENDING if image_id in outdated else counted_as(JobStatus.DONE, version)
                changes[after] = changes.get(after, 0) + 1
        # One counter slot a transaction: a second would deadlock with a recount that locks them all.
        self._count(software.name, changes)
        for result in [*on_time.values(), *late.values()]:
            if held[result.image_id].version is not None:
                self._delete_rows(software, result.image_id)  # a reopened job's last result: replaced now
            for model, model_rows in result.rows:
                # Every row names every column: insert_many takes its columns from the first row alone,
                # and would drop the values of columns that only later rows name.
                blank = {name: None for name in model._meta.fields if name != model._meta.primary_key.name}
                for chunk in peewee.chunked([{**blank, **row, "image_id": result.image_id} for row in model_rows], 500):
                    model.insert_many(chunk).execute()
        changed = self._settle_downstream(software, now, list(on_time)) if on_time else 0
        # A late result also brings back the jobs that were skipped for that failure.
        changed += self._reopen_downstream(software, now, list(late)) if late else 0
        if outdated:
            changed += self._reopen_results_of_other_versions(software, current.version, sorted(outdated))
        if changed:
            self.signal.notify()
        return outcomes

    @staticmethod
    def _arrived_outdated(current: Settings, stored: list[Job]) -> set[str]:
        """Of the jobs whose results a transaction stores, the image IDs of those to reopen on arrival:
        leases taken under a version that a later change replaced with ``recompute``. Their results are
        as outdated as the done jobs that change reopened, and would otherwise stay done under the old
        version for good; each stays readable until the new version's result replaces it."""
        if not current.recompute:
            return set()
        return {job.image_id for job in stored if job.claimed_version != current.version}

    @staticmethod
    def _stored(job: Job, result: PreparedResult, now: float) -> Job:
        """The job as the UPDATE that stores ``result`` leaves it."""
        kept = ("image_id", "attempts", "claimed_at", "lease_expires_at", "claimed_version")
        fields = {field: getattr(job, field) for field in kept}
        stored = {"status": JobStatus.DONE, "info": result.info, "error": None, "finished_at": now}
        return type(job)(**fields, **stored, version=job.claimed_version)

    @staticmethod
    def _delete_rows(software: Software, image_id: str) -> None:
        """The image's rows in the software's extra tables."""
        for table, columns in software.tables.items():
            extra = extra_table_model(software.id, table, columns)
            extra.delete().where(extra.image_id == image_id).execute()
