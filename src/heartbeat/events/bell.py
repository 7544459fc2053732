"""A bell that threads of one process wait on: rung when something they wait for may have happened."""

from __future__ import annotations

import threading


class Bell:
    """A count of rings and a condition: note :attr:`rings`, look, and if there was nothing, :meth:`wait`
    for the count to move past what was noted."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._rings = 0

    @property
    def rings(self) -> int:
        with self._condition:
            return self._rings

    def ring(self) -> None:
        with self._condition:
            self._rings += 1
            self._condition.notify_all()

    def wait(self, since: int, timeout_seconds: float) -> bool:
        """Wait until the bell rang after ``since`` rings (True) or the time is up (False)."""
        with self._condition:
            return self._condition.wait_for(lambda: self._rings != since, timeout_seconds)
