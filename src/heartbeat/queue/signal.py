"""Wakes long-polling claims in this process when new work may be there, and keeps the line of
those that wait for a software with ``max_in_flight`` (to hand them freed room: ``handoff.py``)."""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections import Counter

from heartbeat.queue.statements import ClaimedJob


class Place(enum.Enum):
    """Where a :class:`WaitingClaim` stands."""

    IN_LINE = "in line"  # waiting; a submit may take it
    TAKEN = "taken"  # a submit's transaction is leasing jobs for it: it waits for the outcome
    OUT = "out"  # not in line (claiming on its own, or gone)


@dataclasses.dataclass(eq=False)
class WaitingClaim:
    """A claim waiting in this process for a software at its ``max_in_flight``: up to ``wanted`` jobs
    under leases of ``lease_seconds`` (None: the software's own). ``jobs`` are those handed to it."""

    software: str
    wanted: int
    lease_seconds: int | None
    place: Place = Place.OUT
    jobs: list[ClaimedJob] = dataclasses.field(default_factory=list)
    condition: threading.Condition | None = None  # its thread's, while it waits


@dataclasses.dataclass(eq=False)
class _Waiter:
    """A thread in :meth:`WorkSignal.wait`."""

    condition: threading.Condition
    permitted: bool = False  # a :meth:`WorkSignal.wake_one` chose it


class WorkSignal:
    """A generation count per software that goes up whenever work for it may have appeared in this
    process (an upload, a release, a failure with a retry, a requeue, a resume ...).

    A waiting claim notes its software's generation, looks for work, and if it found none, waits for
    the generation to change. Work made by other API processes is noticed by
    :class:`heartbeat.queue.waiting.WaitingClaims`' watcher, which calls :meth:`notify` in turn.
    """

    def __init__(self) -> None:
        # One lock; a condition on it per waiting thread, so that a wake-up meant for one (a
        # :meth:`wake_one`, jobs handed over) wakes that thread alone, not every waiting thread
        # (each of which would take the lock and the GIL in turn only to find nothing).
        self._lock = threading.Lock()
        self._everyone = 0  # bumped by a notify for every software
        self._per_software: Counter[str] = Counter()
        self._waiters: dict[str, list[_Waiter]] = {}  # by software, first come first
        self._lines: dict[str, list[WaitingClaim]] = {}  # by software: claims waiting at its limit, first first

    def notify(self, *software: str) -> None:
        """Wake the claims waiting for these software (by name), or for every software when none is named."""
        with self._lock:
            if software:
                self._per_software.update(software)
            else:
                self._everyone += 1
            for name in software or list(self._waiters):
                for waiter in self._waiters.get(name, ()):
                    waiter.condition.notify()

    def wake_one(self, software: str) -> None:
        """Wake one claim waiting for ``software`` (if any waits): room for one job was freed at its
        limit, and waking them all would only have them queue for it."""
        with self._lock:
            waiter = next((waiter for waiter in self._waiters.get(software, ()) if not waiter.permitted), None)
            if waiter is not None:
                waiter.permitted = True
                waiter.condition.notify()

    def generation(self, software: str) -> int:
        with self._lock:
            return self._generation(software)

    def _generation(self, software: str) -> int:
        return self._everyone + self._per_software[software]

    def wait(
        self, software: str, since_generation: int, timeout_seconds: float, claim: WaitingClaim | None = None
    ) -> bool:
        """Wait until ``software``'s generation is past ``since_generation``, or a :meth:`wake_one` is
        this waiter's, or jobs were handed to ``claim`` (True), or the time is up (False)."""
        with self._lock:
            waiter = _Waiter(threading.Condition(self._lock))
            if claim is not None:
                claim.condition = waiter.condition
            self._waiters.setdefault(software, []).append(waiter)
            try:
                return waiter.condition.wait_for(
                    lambda: (
                        bool(claim is not None and claim.jobs)
                        or self._generation(software) != since_generation
                        or waiter.permitted
                    ),
                    timeout_seconds,
                )
            finally:
                self._waiters[software].remove(waiter)
                if not self._waiters[software]:
                    del self._waiters[software]
                if claim is not None:
                    claim.condition = None

    # --- the line of claims waiting at a limit (handoff.py hands them freed room) ----------------

    def in_line(self, software: str) -> int:
        """How many claims wait in ``software``'s line."""
        with self._lock:
            return len(self._lines.get(software, ()))

    def join(self, claim: WaitingClaim) -> None:
        """Put ``claim`` at the end of its software's line."""
        with self._lock:
            if claim.place is Place.OUT and not claim.jobs:
                claim.place = Place.IN_LINE
                self._lines.setdefault(claim.software, []).append(claim)

    def leave(self, claim: WaitingClaim) -> list[ClaimedJob]:
        """Take ``claim`` out of its line, after the hand-over of a submit that took it has ended
        (committed or rolled back): the jobs handed to it, which its caller now holds."""
        with self._lock:
            if claim.place is Place.TAKEN:
                claim.condition = threading.Condition(self._lock)
                claim.condition.wait_for(lambda: claim.place is not Place.TAKEN)
                claim.condition = None
            if claim.place is Place.IN_LINE:
                self._lines[claim.software].remove(claim)
                if not self._lines[claim.software]:
                    del self._lines[claim.software]
            claim.place = Place.OUT
            jobs, claim.jobs = claim.jobs, []
            return jobs

    def take(self, software: str, jobs: int) -> list[tuple[WaitingClaim, int]]:
        """The claims first in ``software``'s line for up to ``jobs`` jobs in all, each with how many
        it gets, taken out of line (:attr:`Place.TAKEN`) until :meth:`settle`."""
        taken: list[tuple[WaitingClaim, int]] = []
        with self._lock:
            line = self._lines.get(software, [])
            while line and jobs > 0:
                claim = line.pop(0)
                claim.place = Place.TAKEN
                taken.append((claim, min(jobs, claim.wanted)))
                jobs -= taken[-1][1]
            if not line:
                self._lines.pop(software, None)
        return taken

    def settle(self, handed: dict[WaitingClaim, list[ClaimedJob]]) -> None:
        """The hand-over that took these claims ended: each holds its jobs now (an empty list, as when
        it rolled back: none), and those without any go back to the front of their line."""
        with self._lock:
            for claim, jobs in reversed(handed.items()):
                claim.jobs = jobs
                if jobs:
                    claim.place = Place.OUT
                else:
                    claim.place = Place.IN_LINE
                    self._lines.setdefault(claim.software, []).insert(0, claim)
                if claim.condition is not None:  # its thread waits: in :meth:`wait` or :meth:`leave`
                    claim.condition.notify()
