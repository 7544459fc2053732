"""The software registry: registering a software creates its tables and backfills its jobs."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import peewee

from heartbeat.catalog.pipeline import check_dependencies
from heartbeat.db.database import Database
from heartbeat.db.models import COLUMN_FIELDS, DEFAULT_VERSION, Software, extra_table_model
from heartbeat.db.paging import NAME_ORDER, keyset_page
from heartbeat.errors import Conflict, NotFound
from heartbeat.events.outbox import SOFTWARE_CHANGED, SOFTWARE_CREATED
from heartbeat.query import parse, resolve
from heartbeat.query.resolve import Resolved
from heartbeat.queue.flow import WINDOWS, rate_fields, rate_of
from heartbeat.queue.reads import THROUGHPUT_WINDOW_SECONDS
from heartbeat.validation import check

if TYPE_CHECKING:
    from heartbeat.queue import JobQueue

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
RESERVED_COLUMNS = frozenset({"id", "image_id"})
MAX_ORIGINS = 100
MAX_LEASE_SECONDS = 7 * 24 * 3600
MAX_ATTEMPTS = 1000
MAX_UPSTREAM = 100

Schema = dict[str, Any]
NAME: Schema = {"type": "string", "pattern": NAME_PATTERN.pattern}
LEASE_SECONDS: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_LEASE_SECONDS}
MAX_ATTEMPTS_FIELD: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS}
VERSION: Schema = {"type": "string", "minLength": 1, "maxLength": 64, "description": "the software's current model"}
ORIGIN: Schema = {"type": "string", "minLength": 1, "maxLength": 255}
# What a software is registered with: the one statement of these rules, checked by :meth:`Registry.register`
# (for the API and the CLI alike) and shown as the request body in the OpenAPI document.
MAX_IN_FLIGHT: Schema = {
    "type": ["integer", "null"],
    "minimum": 1,
    "maximum": 1_000_000,
    "description": "how many of its jobs may be claimed at once, across every process; null: no limit",
}
RATE: Schema = {
    "oneOf": [
        {"type": "null"},
        *(
            {
                "type": "object",
                "properties": {key: {"type": "integer", "minimum": 1, "maximum": 1_000_000_000}},
                "required": [key],
                "additionalProperties": False,
            }
            for key in WINDOWS
        ),
    ],
    "description": "how many jobs may be handed out in any second, minute or hour (any such window), across "
    "every process; null: no limit",
}

SOFTWARE_FIELDS: Schema = {
    "type": "object",
    "properties": {
        "name": NAME,
        "max_in_flight": MAX_IN_FLIGHT,
        "rate": RATE,
        "version": VERSION,
        "lease_seconds": LEASE_SECONDS,
        "max_attempts": MAX_ATTEMPTS_FIELD,
        "tables": {
            "type": "object",
            "propertyNames": NAME,
            "additionalProperties": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": NAME | {"not": {"enum": sorted(RESERVED_COLUMNS)}},
                "additionalProperties": {"enum": list(COLUMN_FIELDS)},
            },
        },
        "after": {"type": "array", "items": NAME, "uniqueItems": True, "maxItems": MAX_UPSTREAM},
        "origins": {
            "type": ["array", "null"],
            "items": ORIGIN,
            "uniqueItems": True,
            "minItems": 1,
            "maxItems": MAX_ORIGINS,
        },
    },
    "required": ["name"],
    "additionalProperties": False,
}
# What may change once a software is registered (``PATCH /v1/software/{name}``).
SOFTWARE_CHANGES: Schema = {
    "type": "object",
    "properties": {
        "version": VERSION,
        "lease_seconds": LEASE_SECONDS,
        "max_attempts": MAX_ATTEMPTS_FIELD,
        "paused": {"type": "boolean"},
        "max_in_flight": MAX_IN_FLIGHT,
        "rate": RATE,
        "recompute": {
            "type": "boolean",
            "description": "with a new version: reopen the done jobs of other versions (default true)",
        },
    },
    "additionalProperties": False,
}


class Registry:
    """Reads and registers software; each software's rows live in its own tables."""

    def __init__(
        self,
        database: Database,
        queue: JobQueue,
        clock: Callable[[], float],
        *,
        default_lease_seconds: int,
        default_max_attempts: int,
    ):
        self._database = database
        self._queue = queue
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
        version: str = DEFAULT_VERSION,
        max_in_flight: int | None = None,
        rate: dict[str, int] | None = None,
    ) -> Software:
        """Create the software's tables, record it, and give every existing image a job.

        ``after``: upstream software, registered already, whose jobs must be done first.
        ``origins``: only images of these origins get a pending job; the others' is skipped.
        """
        tables, after = tables or {}, after or []
        fields: dict[str, Any] = {"name": name, "tables": tables, "after": after, "origins": origins}
        fields["version"] = version
        fields |= {"max_in_flight": max_in_flight, "rate": rate}
        limits = {"lease_seconds": lease_seconds, "max_attempts": max_attempts}
        check(fields | {key: value for key, value in limits.items() if value is not None}, SOFTWARE_FIELDS)
        lease_seconds = self._default_lease_seconds if lease_seconds is None else lease_seconds
        max_attempts = self._default_max_attempts if max_attempts is None else max_attempts
        if Software.get_or_none(Software.name == name) is not None:
            raise Conflict(f"software {name!r} is already registered")
        check_dependencies(name, after, self.all())  # before any table is made: a refusal changes nothing
        self._queue.rows.create_job_table(name, version)
        fields = {
            "name": name,
            "lease_seconds": lease_seconds,
            "max_attempts": max_attempts,
            "tables": tables,
            "after": after,
            "origins": origins,
            "version": version,
            "created_at": self._clock(),
            "max_in_flight": max_in_flight,
            **rate_fields(rate),
        }
        try:
            # No cycle can come of a race: every name in ``after`` was registered before this one.
            software = self._database.transaction(self._create, fields)
        except peewee.IntegrityError:
            raise Conflict(f"software {name!r} is already registered") from None
        self._database.create_tables(extra_models(software))
        self._queue.rows.backfill_jobs(software)
        return software

    def _create(self, fields: dict[str, Any]) -> Software:
        software = Software.create(**fields)
        if software.max_in_flight is not None or software.rate_limit is not None:
            self._queue.flow.make_lock(software.name)
        self._queue.outbox.add(SOFTWARE_CREATED, software_settings(software), software=software.name)
        return software

    def get(self, name: str) -> Software:
        """The software named ``name``, from this process's memory after the first read: what a
        registration sets never changes. What :meth:`change` changes (version, lease, attempts,
        paused) may differ from the database: read it with :meth:`fresh` (the queue reads it itself)."""
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
        return self.change(name, {"paused": paused})

    def change(self, name: str, changes: dict[str, Any]) -> Software:
        """Change a software's ``version``, ``lease_seconds``, ``max_attempts`` or ``paused``
        (:data:`SOFTWARE_CHANGES`; :class:`InvalidInput`, 400, otherwise). A new version reopens the
        done jobs whose result came from another version, unless ``"recompute": false``."""
        check(changes, SOFTWARE_CHANGES)
        software = self.get(name)
        settings = {key: value for key, value in changes.items() if key not in ("recompute", "rate")}
        if "rate" in changes:
            settings |= rate_fields(changes["rate"])
        if "version" in settings:
            settings["recompute"] = changes.get("recompute", True)
        changed = self._database.transaction(self._change, software, settings)
        if "version" in settings:
            self._queue.counters.create_counters(name, changed.version)
            if changed.recompute:
                self._queue.claims.reopen_outdated(changed)
        return changed

    def _change(self, software: Software, settings: dict[str, Any]) -> Software:
        """Set ``settings`` and write ``software.changed`` with those that differ from before (if any)."""
        before = self.fresh(software.name)
        if settings:
            Software.update(**settings).where(Software.id == software.id).execute()
        if settings.get("max_in_flight") is not None or settings.get("rate_limit") is not None:
            self._queue.flow.make_lock(software.name)
        changed = self.fresh(software.name)
        differ = {key: getattr(changed, key) for key in settings if getattr(before, key) != getattr(changed, key)}
        if "rate_limit" in differ or "rate_window" in differ:  # shown as the API takes it
            differ = {key: value for key, value in differ.items() if key not in ("rate_limit", "rate_window")}
            differ["rate"] = rate_of(changed.rate_limit, changed.rate_window)
        if differ:
            data = {"changes": differ, "software": software_settings(changed)}
            self._queue.outbox.add(SOFTWARE_CHANGED, data, software=software.name)
        return changed

    def where(self, expression: str | None) -> Resolved | None:
        """A ``where`` expression parsed and checked against the software registered now (None for
        None); :class:`InvalidInput` (400) with the column of its first fault."""
        if expression is None:
            return None
        return resolve(parse(expression), {software.name: software for software in self.all()})

    def all(self) -> list[Software]:
        return list(Software.select().order_by(Software.name))

    def page(self, cursor: str | None, limit: int) -> tuple[list[Software], str | None]:
        """Up to ``limit`` software by name, past ``cursor`` (a ``NAME_ORDER`` cursor); and the next
        page's cursor, or None."""
        return keyset_page(Software.select(), (Software.name,), NAME_ORDER, cursor, limit)

    def describe(self, software: Software) -> dict[str, Any]:
        """The software as the API shows it: its settings (:func:`software_settings`), what is in
        flight, its counts and its recent throughput."""
        return software_settings(software) | {
            "in_flight": self._queue.flow.in_flight(software, self._clock()),
            "counts": self._queue.counters.counts(software),
            "throughput": {
                "window_seconds": THROUGHPUT_WINDOW_SECONDS,
                **self._queue.reads.finished_recently(software),
            },
        }


def software_settings(software: Software) -> dict[str, Any]:
    """What a ``software.created`` or ``software.changed`` event carries: the software without its counts."""
    return {
        "name": software.name,
        "version": software.version,
        "lease_seconds": software.lease_seconds,
        "max_attempts": software.max_attempts,
        "tables": software.tables,
        "paused": software.paused,
        "after": software.after,
        "origins": software.origins,
        "max_in_flight": software.max_in_flight,
        "rate": rate_of(software.rate_limit, software.rate_window),
    }


def extra_models(software: Software) -> list[type[peewee.Model]]:
    return [extra_table_model(software.id, table, columns) for table, columns in software.tables.items()]
