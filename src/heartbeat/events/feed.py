"""Reading events by cursor: a page after a position, and waiting for the next one.

A cursor is an event's position as decimal text (the event's ``id``): the page after it holds the
events with a higher position, in position order. What has a position is final (see
``sequencer.py``), so a consumer following ``next_cursor`` sees every event once and skips none.
A page with filters scans at most ``SCAN_POSITIONS`` positions past its cursor, so that a rare
type does not make one request read the whole table: its ``next_cursor`` then moves past what it
scanned though it found nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import peewee

from heartbeat.db.database import Database
from heartbeat.db.models import Event
from heartbeat.errors import Gone, InvalidInput
from heartbeat.events.outbox import EVENT_TYPES
from heartbeat.events.sequencer import Sequencer

log = logging.getLogger(__name__)

CURSOR = re.compile(r"[0-9]{1,19}")
SCAN_POSITIONS = 10_000
POLL_SECONDS = 0.2  # how often a process with waiting readers looks for events of other processes
NOW = "now"  # ``after=now``: from the last event committed so far


@dataclasses.dataclass(frozen=True)
class EventFilter:
    """Which events a reader wants: of these ``types`` (None: all) and this ``software`` (None: any)."""

    types: frozenset[str] | None = None
    software: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.types or ()) - set(EVENT_TYPES))
        if unknown:
            raise InvalidInput(f"unknown event type {unknown[0]!r}: one of {', '.join(EVENT_TYPES)}")

    def matches(self, type: str, software: str | None) -> bool:
        return (self.types is None or type in self.types) and (self.software is None or software == self.software)


def describe_event(
    position: int, type: str, at: float, software: str | None, image_id: str | None, data: Any
) -> dict[str, Any]:
    """An event as the API shows it: ``{"id", "type", "time", "software"?, "image_id"?, "data"}``."""
    event: dict[str, Any] = {"id": str(position), "type": type, "time": at}
    if software is not None:
        event["software"] = software
    if image_id is not None:
        event["image_id"] = image_id
    event["data"] = data
    return event


class EventFeed:
    """Pages of events after a cursor, and waiting for events (see the module's docstring)."""

    def __init__(self, database: Database, sequencer: Sequencer, *, poll_seconds: float = POLL_SECONDS):
        self._database = database
        self._sequencer = sequencer
        self._poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._waiting = 0
        self._watcher: threading.Thread | None = None
        self._seen_head = 0
        self.stopping = threading.Event()  # set when the server stops: waiting readers answer now

    def position(self, cursor: str | None) -> int:
        """The position a cursor names: None is before the oldest event kept, ``now`` the last one.
        :class:`InvalidInput` (400) for a cursor the server did not make, :class:`Gone` (410) for one
        older than the events kept."""
        self._sequencer.catch_up()
        if cursor is None:
            return self._sequencer.retained_after()
        if cursor == NOW:
            return self._sequencer.head()
        if not CURSOR.fullmatch(cursor) or int(cursor) > self._sequencer.head():
            raise InvalidInput(f"cursor {cursor[:40]!r} was not made by this server")
        if int(cursor) < self._sequencer.retained_after():
            raise Gone(
                f"events up to {self._sequencer.retained_after()} are no longer kept "
                "(HEARTBEAT_EVENTS_RETAIN_SECONDS); start again without a cursor"
            )
        return int(cursor)

    def page(self, after: int, wanted: EventFilter, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Up to ``limit`` events past position ``after`` that ``wanted`` matches, and the position to
        go on from."""
        head = self._sequencer.head()
        query = Event.select(Event.position, Event.type, Event.time, Event.software, Event.image_id, Event.data)
        filtered = wanted.types is not None or wanted.software is not None
        end = min(head, after + SCAN_POSITIONS) if filtered else head
        query = query.where((Event.position > after) & (Event.position <= end))
        if wanted.types is not None:
            query = query.where(Event.type.in_(sorted(wanted.types)))
        if wanted.software is not None:
            query = query.where(Event.software == wanted.software)
        rows: Sequence[Any] = list(query.order_by(Event.position).limit(limit).tuples())
        events = [describe_event(*row) for row in rows]
        next_position = int(rows[-1][0]) if len(rows) == limit else end
        return events, next_position

    def close(self) -> None:
        """The server is stopping: every waiting reader and stream ends now."""
        self.stopping.set()
        self._sequencer.sequenced.ring()

    def wait(self, after: int, timeout_seconds: float) -> bool:
        """Wait until an event past ``after`` has a position (True) or ``timeout_seconds`` pass (False).
        Events of this process ring the sequencer's bell; those of others are looked for by one watcher
        thread, every ``poll_seconds`` while anyone waits."""
        deadline = time.monotonic() + timeout_seconds
        with self._lock:
            self._waiting += 1
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="event-watcher", daemon=True)
                self._watcher.start()
        try:
            while True:
                rings = self._sequencer.sequenced.rings
                if self._sequencer.head() > after:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self.stopping.is_set():
                    return False
                self._sequencer.sequenced.wait(rings, min(left, 1.0))
        finally:
            with self._lock:
                self._waiting -= 1

    def _watch(self) -> None:
        while True:
            with self._lock:
                if not self._waiting:
                    self._watcher = None
                    return
            try:
                with self._database.connection():
                    self._sequencer.catch_up(wait=False)
                    head = self._sequencer.head()
                if head != self._seen_head:
                    self._seen_head = head
                    self._sequencer.sequenced.ring()
            except peewee.PeeweeException as error:  # the database is away: readers wait on
                log.warning("event watcher: %s: %s", type(error).__name__, error)
            time.sleep(self._poll_seconds)
