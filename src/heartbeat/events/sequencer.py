"""Positions in commit order: the cure for the outbox's classic trap.

An auto-increment ID is taken at insert, not at commit: a transaction may take ID 9, another ID 10
and commit first, and a reader that saw 10 and went on from it would never see 9. So readers page
along ``position``, which a sequencer pass gives only to rows that have committed:

1. it locks the ``position`` row of ``event_state`` (one pass at a time, across every process and
   machine; a pass that finds it locked leaves the work to the one holding it);
2. it reads the rows that have no position yet, by ID, with a plain (consistent) read, which sees
   exactly the rows committed before it, and gives them positions after the last one given, in ID
   order (``position = id + offset``: gaps are allowed, order is what counts);
3. it commits, and only then can readers see those positions.

A row that commits after a pass's read gets its position in a later pass, after every position
given before: positions are given in a pass's commit order, each pass's after the last, so what a
reader has seen up to a position is final. Two events of one image keep their commit order: a change
to an image's job locks its row, a second change waits for the first to commit and inserts its event
after it, with a higher ID. A pass also notes which software have no pending or claimed job left
(``software.drained``, read in the same snapshot as the events) and hands the events to its
listeners (webhook deliveries), in its transaction.

The server runs one :class:`Sequencer` thread per process, woken by its own commits; a pass every
``IDLE_PASS_SECONDS`` picks up rows another process committed and did not sequence (it stopped).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import peewee

from heartbeat.db.database import Database, transactional
from heartbeat.db.models import Event, EventState
from heartbeat.events.bell import Bell
from heartbeat.events.outbox import (
    IMAGE_CREATED,
    JOB_DONE,
    JOB_FAILED,
    JOB_REOPENED,
    JOB_SKIPPED,
    SOFTWARE_CREATED,
    SOFTWARE_DRAINED,
    Outbox,
)

log = logging.getLogger(__name__)

BATCH = 1000  # rows one pass sequences
IDLE_PASS_SECONDS = 1.0
# After a pass, the thread gathers commits this long before the next: under load one pass sequences
# many transactions' events, instead of a pass (six statements and a commit) for each.
GATHER_SECONDS = 0.1
RETENTION_EVERY_SECONDS = 60.0
RETENTION_BATCH = 1000
POSITION = "position"
RETAINED_AFTER = "retained_after"
OPEN_PREFIX = "open:"
ENDING = frozenset({JOB_DONE, JOB_FAILED, JOB_SKIPPED})  # events of a job leaving pending or claimed
# Events of a job becoming pending (and image.created: a job for every software).
OPENING = frozenset({JOB_REOPENED, SOFTWARE_CREATED})


@dataclasses.dataclass(frozen=True)
class Sequenced:
    """An event just given its position, as a pass's listeners see it."""

    position: int
    type: str
    software: str | None
    image_id: str | None


Listener = Callable[[list[Sequenced], float], None]


class Sequencer:
    """Gives committed events their positions (see the module's docstring), and removes those older
    than ``retain_seconds``."""

    def __init__(self, database: Database, outbox: Outbox, clock: Callable[[], float], *, retain_seconds: float):
        self._database = database
        self._outbox = outbox
        self._clock = clock
        self.retain_seconds = retain_seconds
        self.sequenced = Bell()  # rung after a pass gave positions
        self.listeners: list[Listener] = []
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # -- state --------------------------------------------------------------------------------------

    def head(self) -> int:
        """The last position given (0: none yet)."""
        return self._value(POSITION)

    def retained_after(self) -> int:
        """Events at or before this position were removed (retention)."""
        return self._value(RETAINED_AFTER)

    def _value(self, name: str) -> int:
        row = self._database.execute(
            f"SELECT value FROM {self._database.quote('event_state')} WHERE name = {self._database.param}", (name,)
        ).fetchone()
        return int(row[0]) if row else 0

    # -- passes -------------------------------------------------------------------------------------

    def catch_up(self, *, wait: bool = True) -> None:
        """Sequence what has committed and waits for a position (a cheap read when nothing does). With
        ``wait``, a pass that another thread or process runs now is waited for and followed by one of
        this call's, so every event committed before the call has its position when it returns (a
        reader sees its own writes); else that pass is left to it."""
        unsequenced = self._database.execute(
            f"SELECT 1 FROM {self._database.quote('events')} WHERE position IS NULL LIMIT 1"
        ).fetchone()
        while unsequenced and self.run_once(wait=wait) == BATCH:
            pass

    def run_once(self, *, wait: bool = False) -> int | None:
        """One pass: how many events it sequenced, or None when another pass held the lock (with
        ``wait``: the pass waits for it instead)."""
        count = self._pass(wait)
        if count:
            self.sequenced.ring()
        return count

    @transactional
    def _pass(self, wait: bool) -> int | None:
        database = self._database
        state, events, p = database.quote("event_state"), database.quote("events"), database.param
        skip = " FOR UPDATE SKIP LOCKED" if database.features.skip_locked and not wait else ""
        lock = skip or database.features.update_lock
        row = database.execute(f"SELECT value FROM {state} WHERE name = {p}{lock}", (POSITION,)).fetchone()
        if row is None:
            return None  # another pass holds it
        last = int(row[0])
        rows = database.execute(
            f"SELECT id, type, software, image_id FROM {events} WHERE position IS NULL ORDER BY id LIMIT {BATCH}"
        ).fetchall()
        if not rows:
            return 0
        offset = last + 1 - int(rows[0][0])
        ids = [int(row[0]) for row in rows]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            database.execute(
                f"UPDATE {events} SET position = id + {p} WHERE id IN {database.params(len(chunk))}", [offset, *chunk]
            )
        sequenced = [Sequenced(int(id_) + offset, type_, software, image_id) for id_, type_, software, image_id in rows]
        now = self._clock()
        sequenced += self._drained(sequenced, now)
        database.execute(f"UPDATE {state} SET value = {p} WHERE name = {p}", (sequenced[-1].position, POSITION))
        for listener in self.listeners:
            listener(sequenced, now)
        return len(sequenced)

    def _drained(self, sequenced: list[Sequenced], now: float) -> list[Sequenced]:
        """``software.drained`` for each software that has no pending or claimed job (its ``open``
        counter) now and had some since: at the last pass, or within this one (its events show a job
        made or reopened and one ending). The ``open:`` state is kept up for the next pass. Returns
        the drained events, positioned after ``sequenced``."""
        position = sequenced[-1].position + 1
        ending = {event.software for event in sequenced if event.type in ENDING}
        opening = {event.software for event in sequenced if event.type in OPENING}
        every_software_opened = any(event.type == IMAGE_CREATED for event in sequenced)
        table = self._database.quote("job_counts")
        open_now = {
            str(software): int(count or 0)
            for software, count in self._database.execute(
                f"SELECT software, SUM(count) FROM {table} WHERE status = 'open' GROUP BY software"
            ).fetchall()
        }
        known = {
            row.name.removeprefix(OPEN_PREFIX): row.value
            for row in EventState.select().where(EventState.name.startswith(OPEN_PREFIX))
        }
        drained: list[Sequenced] = []
        for software, count in sorted(open_now.items()):
            flag = 1 if count > 0 else 0
            was = known.get(software)
            opened_here = software in ending and (every_software_opened or software in opening)
            name = f"{OPEN_PREFIX}{software}"
            if was is None:
                EventState.insert(name=name, value=flag).on_conflict_ignore().execute()
            elif was != flag:
                EventState.update(value=flag).where(EventState.name == name).execute()
            if flag == 0 and (was == 1 or opened_here):
                counts = self._final_counts(software)
                Event.insert(
                    position=position, type=SOFTWARE_DRAINED, time=now, software=software, data=counts
                ).execute()
                drained.append(Sequenced(position, SOFTWARE_DRAINED, software, None))
                position += 1
        return drained

    def _final_counts(self, software: str) -> dict[str, int]:
        counts = {"done": 0, "failed": 0, "skipped": 0}
        for status, count in self._database.execute(
            f"SELECT status, SUM(count) FROM {self._database.quote('job_counts')}"
            f" WHERE software = {self._database.param} GROUP BY status",
            (software,),
        ).fetchall():
            key = "done" if str(status).startswith("done@") else str(status)
            if key in counts:
                counts[key] += int(count or 0)
        return counts

    # -- retention ----------------------------------------------------------------------------------

    def remove_expired(self) -> int:
        """Remove the events older than ``retain_seconds``, oldest first, ``RETENTION_BATCH`` a
        transaction; returns how many."""
        removed = 0
        while True:
            count = self._remove_batch(self._clock() - self.retain_seconds)
            removed += count
            if count < RETENTION_BATCH:
                return removed

    @transactional
    def _remove_batch(self, cutoff: float) -> int:
        database = self._database
        lock = database.features.update_lock
        row = database.execute(
            f"SELECT value FROM {database.quote('event_state')} WHERE name = {database.param}{lock}",
            (RETAINED_AFTER,),
        ).fetchone()
        retained_after = int(row[0]) if row else 0
        oldest = self._database.execute(
            f"SELECT position, time FROM {database.quote('events')} WHERE position > {database.param}"
            f" ORDER BY position LIMIT {RETENTION_BATCH}",
            (retained_after,),
        ).fetchall()
        expired = 0
        for _position, at in oldest:
            if at >= cutoff:
                break
            expired += 1
        if not expired:
            return 0
        last = int(oldest[expired - 1][0])
        Event.delete().where((Event.position > retained_after) & (Event.position <= last)).execute()
        EventState.update(value=last).where(EventState.name == RETAINED_AFTER).execute()
        return expired

    # -- the thread ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="event-sequencer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._outbox.written.ring()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        rings = self._outbox.written.rings
        next_retention = time.monotonic()
        while not self._stopped.is_set():
            try:
                with self._database.connection():
                    while (count := self.run_once()) == BATCH:
                        pass
                    if count is None:  # another process's pass is running: ours may be past its snapshot
                        self._stopped.wait(0.01)
                        continue
                    if time.monotonic() >= next_retention:
                        next_retention = time.monotonic() + RETENTION_EVERY_SECONDS
                        self.remove_expired()
            except peewee.PeeweeException as error:  # the database is away: the next round tries again
                log.warning("event sequencer: %s: %s", type(error).__name__, error)
                self._stopped.wait(IDLE_PASS_SECONDS)
            if self._outbox.written.wait(rings, IDLE_PASS_SECONDS):
                self._stopped.wait(GATHER_SECONDS)
            rings = self._outbox.written.rings
