"""The software registry: registering a software creates its tables and backfills its jobs."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import peewee

from heartbeat.db.database import database_proxy
from heartbeat.db.models import COLUMN_FIELDS, Job, Software, extra_table_model, job_model
from heartbeat.errors import Conflict, InvalidInput, NotFound
from heartbeat.pipeline import check_dependencies

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
RESERVED_COLUMNS = frozenset({"id", "image_id"})
STATUSES = ("pending", "claimed", "done", "failed", "skipped")
MAX_ORIGINS = 100
MAX_LEASE_SECONDS = 7 * 24 * 3600
MAX_ATTEMPTS = 1000
THROUGHPUT_WINDOW_SECONDS = 300


class Registry:
    """Reads and registers software; each software's rows live in its own tables."""

    def __init__(self, clock: Callable[[], float], *, default_lease_seconds: int, default_max_attempts: int):
        self._clock = clock
        self._default_lease_seconds = default_lease_seconds
        self._default_max_attempts = default_max_attempts
        self._known: dict[str, Software] = {}

    def register(
        self,
        name: str,
        *,
        lease_seconds: int | None = None,
        max_attempts: int | None = None,
        tables: dict[str, dict[str, str]] | None = None,
        after: list[str] | None = None,
        origins: list[str] | None = None,
    ) -> Software:
        """Create the software's tables, record it, and give every existing image a job.

        ``after``: upstream software, registered already, whose jobs must be done first.
        ``origins``: only images of these origins get a pending job; the others' is skipped.
        """
        from heartbeat.queue import backfill_jobs

        tables = tables or {}
        after = after or []
        check_name(name, "software name")
        check_tables(tables)
        check_origins(origins)
        if len(set(after)) != len(after):
            raise InvalidInput("after names a software twice")
        lease_seconds = self._default_lease_seconds if lease_seconds is None else lease_seconds
        max_attempts = self._default_max_attempts if max_attempts is None else max_attempts
        if not 1 <= lease_seconds <= MAX_LEASE_SECONDS:
            raise InvalidInput(f"lease_seconds must be between 1 and {MAX_LEASE_SECONDS}")
        if not 1 <= max_attempts <= MAX_ATTEMPTS:
            raise InvalidInput(f"max_attempts must be between 1 and {MAX_ATTEMPTS}")
        if Software.get_or_none(Software.name == name) is not None:
            raise Conflict(f"software {name!r} is already registered")
        check_dependencies(name, after, self.all())  # before any table is made: a refusal changes nothing
        database_proxy.create_tables([job_model(name)], safe=True)
        try:
            # No cycle can come of a race: every name in ``after`` was registered before this one.
            software = Software.create(
                name=name,
                lease_seconds=lease_seconds,
                max_attempts=max_attempts,
                tables=tables,
                after=after,
                origins=origins,
                created_at=self._clock(),
            )
        except peewee.IntegrityError:
            raise Conflict(f"software {name!r} is already registered") from None
        database_proxy.create_tables(extra_models(software), safe=True)
        backfill_jobs(software, self._clock())
        return software

    def get(self, name: str) -> Software:
        """The software named ``name``, from this process's memory after the first read: what a
        registration sets never changes. ``paused`` does: read it with :meth:`fresh` (the claim reads
        it from the database itself)."""
        software = self._known.get(name)
        if software is None:
            software = self._known[name] = self.fresh(name)
        return software

    def fresh(self, name: str) -> Software:
        """The software's row as the database holds it now."""
        # The pattern first: MySQL's collations would match "FACE_Détection" to "face_detection".
        software = Software.get_or_none(Software.name == name) if NAME_PATTERN.fullmatch(name) else None
        if software is None:
            raise NotFound(f"no software named {name!r}")
        return software

    def set_paused(self, name: str, paused: bool) -> Software:
        """Pause or resume a software: a paused software's claims find no jobs."""
        software = self.get(name)
        Software.update(paused=paused).where(Software.id == software.id).execute()
        return self.fresh(name)

    def all(self) -> list[Software]:
        return list(Software.select().order_by(Software.name))

    def page(self, after_name: str | None, limit: int) -> list[Software]:
        """Up to ``limit`` software by name, those after ``after_name``."""
        query = Software.select().order_by(Software.name).limit(limit)
        if after_name is not None:
            query = query.where(Software.name > after_name)
        return list(query)

    def counts(self, software: Software) -> dict[str, int]:
        """Jobs per status."""
        job = job_model(software.name)
        return dict.fromkeys(STATUSES, 0) | _count_by_status(job)

    def finished_recently(self, software: Software, window_seconds: int = THROUGHPUT_WINDOW_SECONDS) -> dict[str, int]:
        """Jobs done and failed in the last ``window_seconds`` (read along the ``finished_at`` index)."""
        job = job_model(software.name)
        finished = _count_by_status(job, job.finished_at >= self._clock() - window_seconds)
        return {status: finished.get(status, 0) for status in ("done", "failed")}

    def describe(self, software: Software) -> dict[str, Any]:
        """The software as the API shows it."""
        return {
            "name": software.name,
            "lease_seconds": software.lease_seconds,
            "max_attempts": software.max_attempts,
            "tables": software.tables,
            "paused": software.paused,
            "after": software.after,
            "origins": software.origins,
            "counts": self.counts(software),
            "throughput": {"window_seconds": THROUGHPUT_WINDOW_SECONDS, **self.finished_recently(software)},
        }


def _count_by_status(job: type[Job], where: peewee.Expression | None = None) -> dict[str, int]:
    query = job.select(job.status, peewee.fn.COUNT(job.image_id)).group_by(job.status)
    if where is not None:
        query = query.where(where)
    rows: list[tuple[str, int]] = list(query.tuples())  # type: ignore[arg-type]  # stubs: rows are models
    return dict(rows)


def extra_models(software: Software) -> list[type[peewee.Model]]:
    return [extra_table_model(software.id, table, columns) for table, columns in software.tables.items()]


def check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(f"{what} must match {NAME_PATTERN.pattern}")


def check_origins(origins: Any) -> None:
    if origins is None:
        return
    if not isinstance(origins, list) or not 1 <= len(origins) <= MAX_ORIGINS:
        raise InvalidInput(f"origins must be a list of 1 to {MAX_ORIGINS} origins")
    if not all(isinstance(origin, str) and 0 < len(origin) <= 255 for origin in origins):
        raise InvalidInput("every origin must be a text of 1 to 255 characters")


def check_tables(tables: Any) -> None:
    if not isinstance(tables, dict):
        raise InvalidInput("tables must be an object of table name to columns")
    for table, columns in tables.items():
        check_name(table, "table name")
        if not isinstance(columns, dict) or not columns:
            raise InvalidInput(f"table {table!r} must declare at least one column")
        for column, kind in columns.items():
            check_name(column, "column name")
            if column in RESERVED_COLUMNS:
                raise InvalidInput(f"column name {column!r} is reserved")
            if kind not in COLUMN_FIELDS:
                raise InvalidInput(f"column {column!r}: type must be one of {sorted(COLUMN_FIELDS)}")
