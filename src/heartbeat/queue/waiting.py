"""Long-polling claims: at most ``max_waiting`` of them per API process, and one watcher that looks
for their work.

A claim that finds no job may wait up to its ``wait_seconds`` for one, and waiting holds a server
thread. So a process lets at most ``max_waiting`` claims wait at once; a claim beyond that is answered
at once with no jobs and a ``Retry-After`` (see ``api/jobs.py``), and uploads, submits and reads keep
the other threads.

Waiting claims do not ask the database again and again. Work made in this process (an upload, a
release, a resume ...) wakes them through the :class:`WorkSignal`; work made elsewhere (another API
process, a lease running out, a retry's backoff ending) is found by one watcher thread per process,
which asks, every ``poll_seconds`` and for each software that has waiting claims, whether a claim
would find a job (:meth:`Claims.has_claimable`: two short reads along indexes), and wakes that
software's waiting claims when it would. The database so sees a few reads a second per process and
waited-for software, however many workers wait. What the watcher last saw also answers claims that
are turned away: while it found nothing a moment ago and nothing woke the software since, such a
claim needs no database work at all.

The ``Retry-After`` of a turned-away claim is about as long as it meant to wait (1 to 5 seconds),
or longer when many workers are turned away: each is given the first second from then on in which
fewer than ``RETURNS_PER_SECOND`` turned-away claims are due back, so that however large the fleet,
their returns reach a process at most that often (each still costs a token check).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import Counter

import peewee

from heartbeat.db.database import Database
from heartbeat.db.models import Software
from heartbeat.queue import JobQueue

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
RETURNS_PER_SECOND = 10  # turned-away claims coming back to one process, at most about
MIN_RETRY_AFTER_SECONDS = 1
BASE_RETRY_AFTER_SECONDS = 5  # the longest Retry-After while few workers are turned away
MAX_RETRY_AFTER_SECONDS = 60


@dataclasses.dataclass(frozen=True)
class _Look:
    """What the watcher saw of one software: when (monotonic seconds), at which signal generation."""

    at: float
    generation: int
    found: bool


class WaitingClaims:
    """The waiting claims of one process for every software (see the module's docstring)."""

    def __init__(self, database: Database, queue: JobQueue, *, max_waiting: int, poll_seconds: float = POLL_SECONDS):
        self._database = database
        self.max_waiting = max_waiting
        self._queue = queue
        self._signal = queue.signal
        self._poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._waiting: Counter[str] = Counter()
        self._readers = 0  # event readers waiting (GET /v1/events, streams): they share the bound
        self._streams = 0  # of which streams, which hold their thread for minutes: at most half the bound
        self._software: dict[str, Software] = {}
        self._looks: dict[str, _Look] = {}
        self._watcher: threading.Thread | None = None
        self._due_back: Counter[int] = Counter()  # whole monotonic second -> turned-away claims due back then
        self.closing = False

    @property
    def waiting(self) -> int:
        """How many claims wait now."""
        with self._lock:
            return self._waiting.total() + self._readers

    def enter(self, software: Software) -> bool:
        """Make room for one more claim waiting for ``software``: False when ``max_waiting`` wait already."""
        with self._lock:
            if self._waiting.total() + self._readers >= self.max_waiting:
                return False
            self._waiting[software.name] += 1
            self._software[software.name] = software
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="claim-watcher", daemon=True)
                self._watcher.start()
            return True

    def enter_reader(self, *, stream: bool = False) -> bool:
        """Make room for one more waiting event reader (a ``stream`` of events: at most half of
        ``max_waiting`` are, so that open dashboards never take the room of long-polling claims):
        False when there is none."""
        with self._lock:
            if self._waiting.total() + self._readers >= self.max_waiting:
                return False
            if stream and self._streams >= self.max_waiting // 2:
                return False
            self._readers += 1
            self._streams += stream
            return True

    def leave_reader(self, *, stream: bool = False) -> None:
        with self._lock:
            self._readers -= 1
            self._streams -= stream

    def leave(self, software: Software) -> None:
        with self._lock:
            self._waiting[software.name] -= 1
            if self._waiting[software.name] <= 0:
                del self._waiting[software.name]

    def retry_after(self, wait_seconds: float) -> int:
        """The ``Retry-After`` (whole seconds, RFC 9110's delta-seconds) for a claim turned away now:
        see the module's docstring."""
        now = math.floor(time.monotonic())
        shortest = max(MIN_RETRY_AFTER_SECONDS, min(BASE_RETRY_AFTER_SECONDS, math.ceil(wait_seconds)))
        with self._lock:
            for second in [second for second in self._due_back if second < now]:
                del self._due_back[second]
            seconds = next(
                (s for s in range(shortest, MAX_RETRY_AFTER_SECONDS) if self._due_back[now + s] < RETURNS_PER_SECOND),
                MAX_RETRY_AFTER_SECONDS,
            )
            self._due_back[now + seconds] += 1
        return seconds

    def close(self) -> None:
        """The server is stopping: waiting claims end now (empty), and no claim waits from now on."""
        with self._lock:
            self.closing = True
            self.max_waiting = 0
        self._signal.notify()

    def known_empty(self, software: Software) -> bool:
        """True when the watcher found no claimable job for ``software`` within the last poll and nothing
        in this process woke it since: a claim now would find none either (or one made a moment ago)."""
        with self._lock:
            look = self._looks.get(software.name)
        return (
            look is not None
            and not look.found
            and time.monotonic() - look.at <= 2 * self._poll_seconds
            and self._signal.generation(software.name) == look.generation
        )

    def _watch(self) -> None:
        """Look for each waited-for software's work every poll, until no claim waits; then end."""
        while True:
            with self._lock:
                watched = [self._software[name] for name in self._waiting]
                if not watched:
                    self._watcher = None
                    self._looks.clear()
                    return
            try:
                with self._database.connection():
                    for software in watched:
                        self._look(software)
            except peewee.PeeweeException as error:  # the database is away: the claims wait on
                log.warning("claim watcher: %s: %s", type(error).__name__, error)
            time.sleep(self._poll_seconds)

    def _look(self, software: Software) -> None:
        generation = self._signal.generation(software.name)
        found = self._queue.claims.has_claimable(software)
        with self._lock:
            self._looks[software.name] = _Look(time.monotonic(), generation, found)
        if found:
            self._signal.notify(software.name)
