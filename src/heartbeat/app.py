"""``create_app``: the Falcon app, built from the objects it is given. It never reads the environment."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import falcon
import peewee

from heartbeat.api.auth import Authorization, is_loopback
from heartbeat.api.errors import add_error_handlers
from heartbeat.api.middleware import DatabaseConnection, RequestLog, SecurityHeaders
from heartbeat.api.params import json_handler
from heartbeat.api.routes import add_routes
from heartbeat.catalog import Catalog
from heartbeat.config import Settings
from heartbeat.ingest import Ingest, new_image_id
from heartbeat.metrics import Metrics
from heartbeat.queue import JobQueue
from heartbeat.queue.reaper import LeaseReaper
from heartbeat.registry import Registry
from heartbeat.storage import Storage
from heartbeat.uploads import DirectUploads


def create_app(
    settings: Settings,
    *,
    database: peewee.Database,
    storage: Storage,
    clock: Callable[[], float] = time.time,
    new_id: Callable[[], str] = new_image_id,
    reap_leases_every_seconds: float | None = None,
) -> falcon.App:
    """The WSGI app over an already connected ``database`` and a ``storage`` backend.

    With ``reap_leases_every_seconds`` a background thread fails jobs whose last lease ran out
    (a served app wants it; tests that move the clock by hand do without).
    """
    registry = Registry(
        clock, default_lease_seconds=settings.default_lease_seconds, default_max_attempts=settings.default_max_attempts
    )
    queue = JobQueue(clock)
    ingest = Ingest(settings, storage, queue.signal, clock=clock, new_id=new_id)
    metrics = Metrics()
    metrics.watch_jobs(registry)
    middleware: list[Any] = [
        SecurityHeaders(),
        RequestLog(metrics),
        DatabaseConnection(database),
        Authorization(serving_on_loopback=is_loopback(settings.host)),
    ]
    app = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.media_handlers[falcon.MEDIA_JSON] = json_handler()
    add_error_handlers(app)
    add_routes(
        app,
        settings=settings,
        database=database,
        storage=storage,
        registry=registry,
        queue=queue,
        metrics=metrics,
        catalog=Catalog(storage, registry),
        ingest=ingest,
        uploads=DirectUploads(settings, storage, ingest, clock=clock),
    )
    if reap_leases_every_seconds:
        LeaseReaper(queue, registry, metrics, interval_seconds=reap_leases_every_seconds).start()
    return app
