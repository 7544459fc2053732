"""A background thread that fails jobs whose lease ran out on their last attempt, so that readers
(job routes, counts, metrics) see ``failed`` without waiting for the next claim to notice."""

from __future__ import annotations

import logging
import threading

import peewee

from heartbeat.catalog.registry import Registry
from heartbeat.db.database import Database
from heartbeat.metrics import Metrics
from heartbeat.queue import JobQueue

log = logging.getLogger(__name__)


class LeaseReaper:
    """Every ``interval_seconds``, for every software: :meth:`Claims.expire_leases`.

    ``heartbeat serve`` runs one per server (in the first of its processes); servers on other hosts
    run their own, and the conditional UPDATE lets them all run without harm.
    """

    def __init__(
        self, database: Database, queue: JobQueue, registry: Registry, metrics: Metrics, *, interval_seconds: float
    ):
        self._database = database
        self._queue = queue
        self._registry = registry
        self._metrics = metrics
        self._interval_seconds = interval_seconds
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One round over every software; returns how many jobs it failed."""
        total = 0
        with self._database.connection():
            for software in self._registry.all():
                expired = self._queue.claims.expire_leases(software)
                self._metrics.lease_expiries.labels(software.name).inc(expired)
                total += expired
        return total

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="lease-reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread after the round it may be in."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval_seconds):
            try:
                self.run_once()
            except peewee.PeeweeException as error:  # the database is away: the next round tries again
                log.warning("lease reaper: %s: %s", type(error).__name__, error)
