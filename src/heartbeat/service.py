"""The object graph every entry point works on, built in this one place: the server's app
(:func:`heartbeat.app.build_app`), each ``heartbeat`` command and an import.

A :class:`Service` holds the settings, the connected database, the job queue, the software
registry and the events' sequencer; storage (and what needs it: ingest, the catalog) is opened on
first use, so that a command that never touches bytes (``heartbeat software``) never reaches the
store. :meth:`Service.upgrade` is the one start-up upgrade: every entry point calls it before it
works on the database.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from heartbeat.catalog.images import Catalog
from heartbeat.catalog.registry import Registry
from heartbeat.config import Settings
from heartbeat.db.database import Database
from heartbeat.db.orientation_backfill import fill_orientations
from heartbeat.events.sequencer import Sequencer
from heartbeat.events.webhooks import Webhooks
from heartbeat.ingest.registration import Ingest, new_image_id
from heartbeat.ingest.source_import import Importer
from heartbeat.privacy.audit import Audit
from heartbeat.privacy.chores import PrivacyChores
from heartbeat.privacy.erasure import Erasures
from heartbeat.privacy.retention import RetentionPolicies
from heartbeat.queue import JobQueue
from heartbeat.storage import Storage, open_storage
from heartbeat.storage.sources import Source


class Service:
    """``settings`` and a connected ``database``; ``storage`` when the caller has opened it already
    (else it is opened from the settings when first used). ``clock`` gives seconds since the epoch;
    ``new_id`` a new image's ID."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        storage: Storage | None = None,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = new_image_id,
    ):
        self.settings = settings
        self.database = database
        self.clock = clock
        self.new_id = new_id
        self._storage = storage
        self.queue = JobQueue(database, clock)
        self.registry = Registry(
            database,
            self.queue,
            clock,
            default_lease_seconds=settings.default_lease_seconds,
            default_max_attempts=settings.default_max_attempts,
        )
        self.sequencer = Sequencer(database, self.queue.outbox, clock, retain_seconds=settings.events_retain_seconds)
        self.webhooks = Webhooks(database, clock, settings.url_allow)
        # Each sequencing pass makes the deliveries of its events, in its transaction.
        self.sequencer.listeners.append(self.webhooks.fan_out)

    @functools.cached_property
    def storage(self) -> Storage:
        """The store; raises what :func:`open_storage` raises (a setting it cannot use, a store that
        does not answer)."""
        return self._storage if self._storage is not None else open_storage(self.settings)

    @functools.cached_property
    def ingest(self) -> Ingest:
        return Ingest(self.settings, self.storage, self.database, self.queue, clock=self.clock, new_id=self.new_id)

    @functools.cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.database, self.storage, self.registry, self.queue)

    @functools.cached_property
    def audit(self) -> Audit:
        return Audit(self.database, self.clock, retain_seconds=self.settings.audit_retain_seconds)

    @functools.cached_property
    def erasures(self) -> Erasures:
        return Erasures(self.database, self.catalog, self.registry, self.clock)

    @functools.cached_property
    def retention(self) -> RetentionPolicies:
        return RetentionPolicies(
            self.database,
            self.registry,
            self.erasures,
            self.clock,
            interval_seconds=self.settings.retention_interval_seconds,
        )

    @functools.cached_property
    def privacy_chores(self) -> PrivacyChores:
        """The erasures' and retention's thread (not started): every server process runs one."""
        return PrivacyChores(self.database, self.erasures, self.retention, self.audit, self.clock)

    def upgrade(self, *, pictures: bool = True) -> None:
        """Bring the database up to this release (call with a connection): the job tables and their
        counts (``JobQueue.upgrade``); with ``pictures``, the orientation of images stored before it
        was recorded, read from their bytes (storage is opened only when such images exist). The
        server upgrades with ``pictures`` at start; a command, which may be given other storage flags
        than the server's, does not (it would read a wrong store and record orientation 1). Does
        nothing, and takes no write lock, on a database that is up to date."""
        self.queue.upgrade()
        if pictures:
            fill_orientations(self.database, lambda: self.storage)

    def importer(self, source: Source, *, origin: str | None, workers: int) -> Importer:
        """An import of ``source`` (:func:`heartbeat.storage.sources.open_source`) into this store."""
        return Importer(
            self.settings,
            self.database,
            self.ingest,
            self.catalog,
            source,
            origin=origin,
            workers=workers,
            clock=self.clock,
            new_id=self.new_id,
        )


def open_importer(
    settings: Settings, database: Database, storage: Storage, source: Source, *, origin: str | None, workers: int
) -> Importer:
    """An :class:`Importer` of ``source`` into the server's database and store, as ``heartbeat import``
    runs it: the database upgraded first."""
    service = Service(settings, database, storage=storage)
    with database.connection():
        service.upgrade(pictures=False)
    return service.importer(source, origin=origin, workers=workers)
