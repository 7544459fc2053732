"""Flow control: at most ``max_in_flight`` jobs of a software claimed at once, and at most
``rate_limit`` handed out in any ``rate_window`` seconds, across every server process and machine.

A claim of a software with a limit first locks the software's row of ``flow_locks`` (``FOR UPDATE``
on MySQL; SQLite's write transactions exclude each other already), so that such claims read the
room left one at a time, and each sees what the claims before it committed: under REPEATABLE READ a
transaction reads the snapshot its first plain read took, so the claim reads its settings with a
lock (which takes none) and the room with plain reads after the flow lock. The room is then read,
not kept: in flight are the jobs ``claimed`` whose lease has not run out (``available_at`` is the
lease's end while claimed), counted along the status index, so a lease that ends by any path (a
submit, a failure, a release, its expiry) frees its room at once, with nothing to give back or to
leak; handed out in the window are the ``handouts`` rows of the claims of the last ``rate_window``
seconds, summed, a sliding window: no window of that length, wherever it starts, holds more.
Reading the count and then claiming without the lock (the naive way) lets two claims each see the
same room and both take it.

A software without limits pays nothing: its claim reads its limits with its other settings, in the
statement it ran already.
"""

from __future__ import annotations

import dataclasses
import math

from heartbeat.db.models import FlowLock, Handout, JobStatus, Software, job_table_name
from heartbeat.queue.core import QueuePart
from heartbeat.queue.statements import Settings

WINDOWS = {"per_second": 1, "per_minute": 60, "per_hour": 3600}  # a rate's key -> its window in seconds


@dataclasses.dataclass(frozen=True)
class Room:
    """How many jobs a claim may take now (``jobs``), and when none, in how many seconds room is
    expected (``retry_after``, whole seconds, at least 1)."""

    jobs: int
    retry_after: int | None = None


def rate_of(limit: int | None, window: int | None) -> dict[str, int] | None:
    """A rate as the API shows it: ``{"per_minute": 30}``; None for no limit."""
    if limit is None or window is None:
        return None
    return {next(key for key, seconds in WINDOWS.items() if seconds == window): limit}


def rate_fields(rate: dict[str, int] | None) -> dict[str, int | None]:
    """A rate from the API (``{"per_second": n}`` or ``per_minute`` or ``per_hour``, checked by the
    schema already; None: no limit) as the software's columns."""
    if rate is None:
        return {"rate_limit": None, "rate_window": None}
    [(key, limit)] = rate.items()
    return {"rate_limit": limit, "rate_window": WINDOWS[key]}


class FlowControl(QueuePart):
    """The room a claim of a limited software may take (see the module's docstring)."""

    def make_lock(self, software_name: str) -> None:
        """The software's lock row (kept when it exists); call when a limit is set."""
        FlowLock.insert(software=software_name).on_conflict_ignore().execute()

    def room(self, software: Software, settings: Settings, wanted: int, now: float) -> Room:
        """Lock the software's claims until this transaction ends, and read the room left: at most
        ``wanted``. Call in the claim's transaction, before it reads candidates."""
        database = self._database
        p = database.param
        locks = database.quote(FlowLock._meta.table_name)
        locked = database.execute(
            f"SELECT software FROM {locks} WHERE software = {p}{database.features.update_lock}", (software.name,)
        ).fetchone()
        if locked is None:  # set by a process of an older release, or before the row was made
            self.make_lock(software.name)
            database.execute(
                f"SELECT software FROM {locks} WHERE software = {p}{database.features.update_lock}", (software.name,)
            )
        room, retry_after = wanted, None
        # Plain reads: the transaction's snapshot is taken by the first of them, after the lock (the
        # settings before it were read with a lock, which takes none), so they see every claim that
        # held the lock before. Locking reads here would lock the claimed jobs' index entries and then
        # their rows, the other way round from a submit: deadlocks.
        if settings.max_in_flight is not None:
            table = database.quote(job_table_name(software.name))
            live, ends = database.execute(
                f"SELECT COUNT(*), MIN(available_at) FROM {table} WHERE status = {p} AND available_at > {p}",
                (JobStatus.CLAIMED.value, now),
            ).fetchone()
            room = min(room, settings.max_in_flight - int(live))
            if room <= 0 and ends is not None:
                retry_after = float(ends) - now
        if settings.rate_limit is not None and settings.rate_window is not None:
            since = now - settings.rate_window
            handouts = database.quote(Handout._meta.table_name)
            database.execute(f"DELETE FROM {handouts} WHERE software = {p} AND at <= {p}", (software.name, since))
            rows = database.execute(
                f"SELECT at, count FROM {handouts} WHERE software = {p} AND at > {p} ORDER BY at",
                (software.name, since),
            ).fetchall()
            handed = sum(int(count) for _at, count in rows)
            left = settings.rate_limit - handed
            room = min(room, left)
            if left <= 0:
                # Room comes back as the oldest handouts leave the window: when enough of them have.
                needed, freed = 1 - left, 0
                for at, count in rows:
                    freed += int(count)
                    if freed >= needed:
                        retry_after = max(retry_after or 0.0, float(at) + settings.rate_window - now)
                        break
        if room <= 0:
            return Room(0, max(1, math.ceil(retry_after)) if retry_after is not None else 1)
        return Room(room)

    def has_room(self, software: Software, settings: Settings, now: float) -> bool:
        """Whether a claim would find room now (a read without the lock: for the waiting claims' watcher)."""
        if settings.max_in_flight is not None and self.in_flight(software, now) >= settings.max_in_flight:
            return False
        if settings.rate_limit is not None and settings.rate_window is not None:
            p = self._database.param
            row = self._database.execute(
                f"SELECT SUM(count) FROM {self._database.quote(Handout._meta.table_name)}"
                f" WHERE software = {p} AND at > {p}",
                (software.name, now - settings.rate_window),
            ).fetchone()
            if int(row[0] or 0) >= settings.rate_limit:
                return False
        return True

    def freed(self, software: Software, settings: Settings, count: int) -> None:
        """``count`` leases of a limited software ended: once this transaction commits, as many of its
        waiting claims in this process look again (room is read, so they find it)."""
        if settings.limited:
            name = software.name

            def wake() -> None:
                for _ in range(count):
                    self.signal.wake_one(name)

            self._database.after_commit(wake)

    def handed_out(self, software: Software, settings: Settings, count: int, now: float) -> None:
        """Note ``count`` jobs handed out now (a software with a rate); call in the claim's transaction."""
        if settings.rate_limit is not None and count:
            Handout.insert(software=software.name, at=now, count=count).execute()

    def in_flight(self, software: Software, now: float) -> int:
        """How many of its jobs are claimed under a lease that has not run out."""
        p = self._database.param
        table = self._database.quote(job_table_name(software.name))
        row = self._database.execute(
            f"SELECT COUNT(*) FROM {table} WHERE status = {p} AND available_at > {p}", (JobStatus.CLAIMED.value, now)
        ).fetchone()
        return int(row[0])
