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

    def notify(self, *software: str) -> None:
        """Wake the claims waiting for these software (by name), or for every software when none is named."""
        with self._condition:
            if software:
                self._per_software.update(software)
            else:
                self._everyone += 1
            self._condition.notify_all()

    def generation(self, software: str) -> int:
        with self._condition:
            return self._generation(software)

    def _generation(self, software: str) -> int:
        return self._everyone + self._per_software[software]

    def wait(self, software: str, since_generation: int, timeout_seconds: float) -> bool:
        """Wait until ``software``'s generation is past ``since_generation`` (True) or the time is up (False)."""
        with self._condition:
            return self._condition.wait_for(lambda: self._generation(software) != since_generation, timeout_seconds)
