"""The audit: who was handed access to which pictures, and who deleted, erased or changed tokens.

One entry per request (not per image) that handed out access to picture bytes or results in bulk: a
claim's signed URLs, ``/url``, ``/content``, ``/thumbnail``, a listing's thumbnail URLs, a read of
the local blob route, an export; and one per deletion, erasure, batch of an erasure, retention run,
token made or revoked. An entry is written before the answer that hands the access out, so that no
access goes unrecorded (the entries CVAT drops under load, cvat#9953, are what this avoids): a
database that cannot take it fails the request (503).

An entry holds IDs alone (the image IDs it concerns, the token's, an erasure's), counts and names of
ours (a software, an export's format), never a filename, an origin or a ``where`` expression, so that
an erased image's entries keep its ID and nothing else (GDPR art. 17 and 30: the record of
processing outlives the data it records). No route changes or deletes an entry; the server removes
those older than ``HEARTBEAT_AUDIT_RETAIN_SECONDS`` (default 400 days) as a cluster-wide chore.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import Any

from heartbeat.db.database import Database, transactional
from heartbeat.db.models import AuditEntry, AuditImage
from heartbeat.db.paging import CursorGrammar, page_of

INSERT_CHUNK = 500
REMOVE_BATCH = 1000
ENTRY_ORDER = CursorGrammar(pattern="^[0-9]{1,18}$", write=lambda key: str(key[0]), read=lambda c: (int(c),))


def write_entry(action: str, at: float, *, token_id: str | None, image_ids: Iterable[str] = (), **detail: Any) -> int:
    """Insert one entry (in the transaction open on this thread, if any) and return its ID. SQL text,
    not peewee's query builder: every claim writes one."""
    engine = AuditEntry._meta.database
    p, (open_quote, close_quote) = engine.param, (engine.quote[0], engine.quote[-1])
    ids = list(dict.fromkeys(image_ids))  # each once, in order
    values = (at, token_id, action, json.dumps(ids, separators=(",", ":")), json.dumps(detail, separators=(",", ":")))
    entries = f"{open_quote}{AuditEntry._meta.table_name}{close_quote}"
    cursor = engine.execute_sql(
        f"INSERT INTO {entries} (time, token_id, action, image_ids, detail) VALUES ({p}, {p}, {p}, {p}, {p})", values
    )
    entry_id = int(cursor.lastrowid)
    images = f"{open_quote}{AuditImage._meta.table_name}{close_quote}"
    for start in range(0, len(ids), INSERT_CHUNK):
        chunk = ids[start : start + INSERT_CHUNK]
        marks = ", ".join(f"({p}, {p})" for _ in chunk)
        engine.execute_sql(
            f"INSERT INTO {images} (image_id, entry_id) VALUES {marks}",
            [value for image_id in chunk for value in (image_id, entry_id)],
        )
    return entry_id


def describe_entry(entry: AuditEntry) -> dict[str, Any]:
    """``{"id", "time", "token_id", "action", "image_ids", "detail"}``; ``token_id`` is null for a
    request to an open server or a command run on the database."""
    return {
        "id": str(entry.id),
        "time": entry.time,
        "token_id": entry.token_id,
        "action": entry.action,
        "image_ids": entry.image_ids,
        "detail": entry.detail,
    }


@dataclasses.dataclass(frozen=True)
class AuditFilter:
    """Which entries a reader asks for; None: any."""

    image_id: str | None = None
    token_id: str | None = None
    action: str | None = None


class Audit:
    """Writes entries (:meth:`record`), reads them a page at a time, removes those past retention."""

    def __init__(self, database: Database, clock: Callable[[], float], *, retain_seconds: float):
        self._database = database
        self._clock = clock
        self.retain_seconds = retain_seconds

    def record(self, action: str, token_id: str | None, image_ids: Iterable[str] = (), **detail: Any) -> None:
        """Write one entry, in the transaction open on this thread or in one of its own; raises
        what the database raises (a request then fails rather than hand out unrecorded access)."""
        self._database.transaction(
            lambda: write_entry(action, self._clock(), token_id=token_id, image_ids=image_ids, **detail)
        )

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the transaction an entry was just written in commits."""
        self._database.after_commit(callback)

    def page(self, which: AuditFilter, after: str | None, limit: int) -> tuple[list[AuditEntry], str | None]:
        """Entries past the cursor ``after`` in the order they were written (an ``ENTRY_ORDER``
        cursor; :class:`~heartbeat.errors.InvalidInput` for another), at most ``limit``, and the next
        page's cursor or None."""
        position = ENTRY_ORDER.parse(after)
        query = AuditEntry.select()
        if which.image_id is not None:
            query = query.join(AuditImage, on=(AuditImage.entry_id == AuditEntry.id)).where(
                AuditImage.image_id == which.image_id
            )
        if which.token_id is not None:
            query = query.where(AuditEntry.token_id == which.token_id)
        if which.action is not None:
            query = query.where(AuditEntry.action == which.action)
        if position is not None:
            query = query.where(AuditEntry.id > position[0])
        rows = list(query.order_by(AuditEntry.id).limit(limit + 1))
        return page_of(rows, limit, lambda entry: (entry.id,), ENTRY_ORDER)

    def remove_expired(self) -> int:
        """Remove the entries older than ``retain_seconds``, ``REMOVE_BATCH`` a transaction; how many."""
        removed = 0
        while count := self._remove_batch(self._clock() - self.retain_seconds):
            removed += count
        return removed

    @transactional
    def _remove_batch(self, cutoff: float) -> int:
        ids = [
            entry.id
            for entry in AuditEntry.select(AuditEntry.id)
            .where(AuditEntry.time < cutoff)
            .order_by(AuditEntry.id)
            .limit(REMOVE_BATCH)
        ]
        if not ids:
            return 0
        AuditImage.delete().where(AuditImage.entry_id.in_(ids)).execute()
        return int(AuditEntry.delete().where(AuditEntry.id.in_(ids)).execute())
