"""Storing results: one path for a single submit and for a batch.

The jobs a submit names are read first with a lock on their rows (``FOR UPDATE`` on MySQL; SQLite's
``BEGIN IMMEDIATE`` transaction holds every write lock already), each result is judged on what its
job holds, and the accepted ones are marked done in one statement per kind (on time, or late after
the last lease ran out), with their extra-table rows, in the same transaction.
"""

from __future__ import annotations

import json
from typing import Any

import peewee

from heartbeat.catalog.extra_rows import prepare_rows
from heartbeat.db.database import transactional
from heartbeat.db.models import Job, Software, extra_table_model
from heartbeat.errors import HeartbeatError, NotFound, TooLarge
from heartbeat.events.outbox import JOB_DONE, NewEvent
from heartbeat.queue.core import LEASE_EXPIRED, QueueCore, QueuePart
from heartbeat.queue.flow import FlowControl
from heartbeat.queue.handoff import Handoffs
from heartbeat.queue.judging import PreparedResult, count_changes, judge
from heartbeat.queue.pipeline import Pipelines
from heartbeat.queue.statements import Settings


class Results(QueuePart):
    """Storing results: one path for a single submit and for a batch."""

    def __init__(self, core: QueueCore, pipelines: Pipelines, flow: FlowControl, handoffs: Handoffs):
        super().__init__(core)
        self._pipelines = pipelines
        self._flow = flow
        self._handoffs = handoffs

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
        """Read the jobs ``results`` name with their rows locked, judge each (:func:`judge`), then
        store the accepted ones, their counts, extra-table rows and what follows downstream."""
        table = self._core.table(software)
        now = self._clock()
        held = table.read_locked(
            sorted({result.image_id for result in results}), lock=self._database.features.update_lock
        )
        judgement = judge(software.name, held, results, now)
        on_time, late = judgement.on_time, judgement.late
        # Read with a shared lock: a change of version commits before this read (which then sees it),
        # or waits for this transaction, and its reopening then finds these results done.
        current = table.settings(software.id, lock=self._database.features.share_lock)
        if current is None:
            raise NotFound(f"no software named {software.name!r}")
        outdated = self._arrived_outdated(current, [held[image_id] for image_id in (*on_time, *late)])
        for group, late_error in ((on_time, None), (late, LEASE_EXPIRED)):
            items = [(result.image_id, result.token, result.info) for result in group.values()]
            if items and table.store_results(items, now, late_error=late_error) != len(items):
                raise RuntimeError("a job changed while this transaction held its row locked")
        # One counter slot a transaction: a second would deadlock with a recount that locks them all.
        self._core.count(software.name, count_changes(judgement, held, outdated))
        for result in [*on_time.values(), *late.values()]:
            if held[result.image_id].version is not None:
                self._delete_rows(software, result.image_id)  # a reopened job's last result: replaced now
            for model, model_rows in result.rows:
                # Every row names every column: insert_many takes its columns from the first row alone,
                # and would drop the values of columns that only later rows name.
                blank = {name: None for name in model._meta.fields if name != model._meta.primary_key.name}
                for chunk in peewee.chunked([{**blank, **row, "image_id": result.image_id} for row in model_rows], 500):
                    model.insert_many(chunk).execute()
        self._outbox.add_many(
            [
                NewEvent(JOB_DONE, done_data(held[result.image_id], result, is_late), software.name, result.image_id)
                for group, is_late in ((on_time, False), (late, True))
                for result in group.values()
            ]
        )
        if on_time and current.limited:  # their leases ended: room for the claims waiting
            handed = self._handoffs.hand_over(software, current, len(on_time), now)
            self._flow.freed(software, current, len(on_time) - handed)
        changed = self._pipelines.settle_downstream(software, now, list(on_time)) if on_time else 0
        # A late result also brings back the jobs that were skipped for that failure.
        changed += self._pipelines.reopen_downstream(software, now, list(late)) if late else 0
        if outdated:
            changed += self._pipelines.reopen_results_of_other_versions(software, current.version, sorted(outdated))
        if changed:
            self.signal.notify()
        return judgement.outcomes

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
    def _delete_rows(software: Software, image_id: str) -> None:
        """The image's rows in the software's extra tables."""
        for table, columns in software.tables.items():
            extra = extra_table_model(software.id, table, columns)
            extra.delete().where(extra.image_id == image_id).execute()


def done_data(held: Job, result: PreparedResult, late: bool) -> dict[str, Any]:
    """A ``job.done`` event's data: the result as stored (``late``: after the last lease ran out)."""
    data = {"status": "done", "version": held.claimed_version, "attempt": held.attempts, "info": result.info}
    return data | {"late": True} if late else data
