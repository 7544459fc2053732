"""The outbox: each change writes its events in its own transaction, so that an event exists if and
only if its change committed (the transactional outbox pattern).

An event row gets its ``id`` at insert, which is not commit order; the :class:`~heartbeat.events.sequencer.Sequencer`
gives it its ``position`` after it committed, and only then can a reader see it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

import peewee

from heartbeat.db.database import Database
from heartbeat.events.bell import Bell

IMAGE_CREATED = "image.created"
IMAGE_DELETED = "image.deleted"
JOB_DONE = "job.done"
JOB_FAILED = "job.failed"
JOB_REOPENED = "job.reopened"
JOB_SKIPPED = "job.skipped"
SOFTWARE_CREATED = "software.created"
SOFTWARE_CHANGED = "software.changed"
SOFTWARE_DRAINED = "software.drained"
EVENT_TYPES = (
    IMAGE_CREATED,
    IMAGE_DELETED,
    JOB_DONE,
    JOB_FAILED,
    JOB_REOPENED,
    JOB_SKIPPED,
    SOFTWARE_CREATED,
    SOFTWARE_CHANGED,
    SOFTWARE_DRAINED,
)
# What an event of a deleted image holds from then on: its type, time, software and the image's ID stay.
ERASED_DATA = {"erased": True}
INSERT_CHUNK = 200  # event rows in one INSERT


@dataclasses.dataclass(frozen=True)
class NewEvent:
    """An event about to be written: its type, the software and image it is about (if any), its data."""

    type: str
    data: dict[str, Any]
    software: str | None = None
    image_id: str | None = None


class Outbox:
    """Writes events in the caller's transaction; :attr:`written` rings once such a transaction commits."""

    def __init__(self, database: Database, clock: Callable[[], float]):
        self._database = database
        self._clock = clock
        self.written = Bell()
        self._insert_sql = f"INSERT INTO {database.quote('events')} (type, time, software, image_id, data) VALUES "
        self._row_params = database.params(5)

    def add(self, type: str, data: dict[str, Any], *, software: str | None = None, image_id: str | None = None) -> None:
        """One event; call inside the change's transaction."""
        self.add_many([NewEvent(type, data, software, image_id)])

    def add_many(self, events: Sequence[NewEvent]) -> None:
        """Events in the order given; call inside the changes' transaction."""
        if not events:
            return
        now = self._clock()
        rows = [
            (e.type, now, e.software, e.image_id, json.dumps(e.data, separators=(",", ":"), allow_nan=False))
            for e in events
        ]
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start : start + INSERT_CHUNK]
            # SQL text, not peewee's query builder: this runs in every submit and upload.
            self._database.execute(
                self._insert_sql + ", ".join([self._row_params] * len(chunk)), [value for row in chunk for value in row]
            )
        self._database.after_commit(self.written.ring)

    def add_selected(
        self, type: str, software: str, job: Any, selected: peewee.Expression, data: dict[str, Any]
    ) -> None:
        """One event of ``type`` and ``data`` for each job of ``software`` (its job model ``job``) that
        ``selected`` matches: call just before the statement that changes those jobs, in its
        transaction, with the same condition. The jobs are read first, locked on MySQL, then their
        events inserted with their values: an ``INSERT ... SELECT`` would hold InnoDB's table-wide
        AUTO-INC lock on ``events`` while it waits for the jobs' row locks, and every other insert of
        an event with it (error 1467 when that wait is a deadlock)."""
        query = job.select(job.image_id).where(selected)
        if self._database.features.mysql:
            query = query.for_update()  # a shared lock here, taken by two at once, would deadlock them
        self.add_many([NewEvent(type, data, software, image_id) for (image_id,) in query.tuples()])


def reopened_because(reason: str) -> dict[str, Any]:
    """A ``job.reopened`` event's data: back to pending for ``reason`` (``requeue``, ``version``, ``upstream``)."""
    return {"status": "pending", "reason": reason}
