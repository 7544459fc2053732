"""What every part of the job queue shares: the database, the clock, the wake-up signal, and each
software's prepared statements."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import NoReturn

from heartbeat.db.database import Database
from heartbeat.db.models import Job, Software, job_model
from heartbeat.errors import NotFound, StaleToken
from heartbeat.queue.signal import WorkSignal
from heartbeat.queue.statements import JobTable

LEASE_EXPIRED = "lease expired"  # the error of a job whose last lease ran out


def new_token() -> str:
    """A lease token: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


class QueueCore:
    def __init__(self, database: Database, clock: Callable[[], float], signal: WorkSignal | None = None):
        self._database = database
        self._clock = clock
        self.signal = signal or WorkSignal()
        self._tables: dict[str, JobTable] = {}

    def _table(self, software: Software) -> JobTable:
        table = self._tables.get(software.name)
        if table is None:
            table = self._tables[software.name] = JobTable(software.name, self._database)
        return table

    def get(self, software: Software, image_id: str) -> Job:
        """One job; :class:`NotFound` (404) if the software has none for that image."""
        job = job_model(software.name)
        row = job.get_or_none(job.image_id == image_id)
        if row is None:
            raise NotFound(f"{software.name} has no job for image {image_id!r}")
        return row

    def _raise_missing_or_stale(self, software: Software, image_id: str) -> NoReturn:
        self.get(software, image_id)
        raise StaleToken()
