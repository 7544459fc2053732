"""Wakes long-polling claims in this process when new work may be there."""

from __future__ import annotations

import threading


class WorkSignal:
    """Wakes long-polling claims in this process when new work may be there.

    Other API processes' uploads are seen by the claim's periodic retry.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def generation(self) -> int:
        with self._condition:
            return self._generation

    def wait(self, since_generation: int, timeout_seconds: float) -> None:
        with self._condition:
            self._condition.wait_for(lambda: self._generation != since_generation, timeout_seconds)
