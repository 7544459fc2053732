"""Wakes long-polling claims in this process when new work may be there."""

from __future__ import annotations

import threading
from collections import Counter


class WorkSignal:
    """A generation count per software that goes up whenever work for it may have appeared in this
    process (an upload, a release, a failure with a retry, a requeue, a resume ...).

    A waiting claim notes its software's generation, looks for work, and if it found none, waits for
    the generation to change. Work made by other API processes is noticed by
    :class:`heartbeat.queue.waiting.WaitingClaims`' watcher, which calls :meth:`notify` in turn.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._everyone = 0  # bumped by a notify for every software
        self._per_software: Counter[str] = Counter()
        self._waiters: Counter[str] = Counter()
        self._permits: Counter[str] = Counter()  # wake-ups for one waiter each (:meth:`wake_one`)

    def notify(self, *software: str) -> None:
        """Wake the claims waiting for these software (by name), or for every software when none is named."""
        with self._condition:
            if software:
                self._per_software.update(software)
            else:
                self._everyone += 1
            self._condition.notify_all()

    def wake_one(self, software: str) -> None:
        """Wake one claim waiting for ``software`` (if any waits): room for one job was freed at its
        limit, and waking them all would only have them queue for it."""
        with self._condition:
            if self._permits[software] < self._waiters[software]:
                self._permits[software] += 1
                self._condition.notify_all()

    def generation(self, software: str) -> int:
        with self._condition:
            return self._generation(software)

    def _generation(self, software: str) -> int:
        return self._everyone + self._per_software[software]

    def wait(self, software: str, since_generation: int, timeout_seconds: float) -> bool:
        """Wait until ``software``'s generation is past ``since_generation``, or a :meth:`wake_one` is
        this waiter's (True), or the time is up (False)."""
        with self._condition:
            self._waiters[software] += 1
            try:

                def woken() -> bool:
                    if self._generation(software) != since_generation:
                        return True
                    if self._permits[software] > 0:
                        self._permits[software] -= 1
                        return True
                    return False

                return self._condition.wait_for(woken, timeout_seconds)
            finally:
                self._waiters[software] -= 1
                self._permits[software] = min(self._permits[software], self._waiters[software])
