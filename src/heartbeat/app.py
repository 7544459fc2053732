"""``create_app``: the Falcon app, built from the objects it is given. It never reads the environment.

:func:`build_app` gives the app over a :class:`heartbeat.service.Service`, with the parts of it that
outlive a request, for ``heartbeat serve`` to start (the lease reaper) and stop (waiting claims); tests
use :func:`create_app`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import falcon

from heartbeat.api.auth import Authorization, is_loopback
from heartbeat.api.errors import add_error_handlers
from heartbeat.api.middleware import DatabaseConnection, RequestLog, SecurityHeaders
from heartbeat.api.params import UnicodeRequestLine, json_handler
from heartbeat.api.routes import ROUTES
from heartbeat.api.routing import Parts, add_routes
from heartbeat.config import Settings
from heartbeat.db.database import Database
from heartbeat.events.delivery import WebhookSender
from heartbeat.events.feed import EventFeed
from heartbeat.events.sequencer import Sequencer
from heartbeat.ingest.direct_uploads import DirectUploads
from heartbeat.ingest.registration import new_image_id
from heartbeat.metrics import Metrics
from heartbeat.queue.reaper import LeaseReaper
from heartbeat.queue.waiting import WaitingClaims
from heartbeat.service import Service
from heartbeat.storage import Storage


@dataclasses.dataclass(frozen=True)
class ServedApp:
    """The app, the :class:`Service` under it, and what of it lives beyond a request."""

    app: falcon.App[falcon.Request, falcon.Response]
    service: Service
    metrics: Metrics
    waiting: WaitingClaims
    events: EventFeed

    def lease_reaper(self, interval_seconds: float) -> LeaseReaper:
        """A reaper (not started) that fails the jobs whose last lease ran out, every ``interval_seconds``."""
        service = self.service
        return LeaseReaper(
            service.database, service.queue, service.registry, self.metrics, interval_seconds=interval_seconds
        )

    def event_sequencer(self) -> Sequencer:
        """The events' sequencer (not started): every server process runs its thread."""
        return self.service.sequencer

    def webhook_sender(self) -> WebhookSender:
        """The webhook deliveries' sender (not started): every server process runs its threads."""
        service = self.service
        return WebhookSender(
            service.database,
            service.sequencer,
            service.webhooks,
            service.clock,
            allow=service.settings.url_allow,
            retry_seconds=service.settings.webhook_retry_seconds,
        )

    def close(self) -> None:
        """The server is stopping: waiting claims and event readers answer now, and no new one waits."""
        self.waiting.close()
        self.events.close()


def build_app(service: Service, *, metrics_dir: str | None = None) -> ServedApp:
    """The WSGI app over ``service`` (its database connected, its tables upgraded by the caller).

    ``metrics_dir``: prometheus-client's multiprocess folder, when several processes serve.
    """
    settings, database = service.settings, service.database
    waiting = WaitingClaims(database, service.queue, max_waiting=settings.waiting_claims_limit)
    metrics = Metrics(metrics_dir)
    events = EventFeed(database, service.sequencer)
    metrics.watch_jobs(service.registry, service.queue)
    middleware: list[Any] = [
        SecurityHeaders(),
        RequestLog(metrics),
        UnicodeRequestLine(),
        DatabaseConnection(database),
        Authorization(database, serving_on_loopback=is_loopback(settings.host), public_url=settings.public_url),
    ]
    app = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.media_handlers[falcon.MEDIA_JSON] = app.resp_options.media_handlers[falcon.MEDIA_JSON] = (
        json_handler()
    )
    add_error_handlers(app, database)
    parts = Parts(
        settings=settings,
        database=database,
        storage=service.storage,
        registry=service.registry,
        queue=service.queue,
        waiting=waiting,
        metrics=metrics,
        catalog=service.catalog,
        ingest=service.ingest,
        uploads=DirectUploads(settings, service.storage, service.ingest, clock=service.clock),
        events=events,
        webhooks=service.webhooks,
        audit=service.audit,
        erasures=service.erasures,
        retention=service.retention,
        chores=service.privacy_chores,
        table=ROUTES,
    )
    add_routes(app, parts, ROUTES)
    return ServedApp(app, service, metrics, waiting, events)


def create_app(
    settings: Settings,
    *,
    database: Database,
    storage: Storage,
    clock: Callable[[], float] = time.time,
    new_id: Callable[[], str] = new_image_id,
) -> falcon.App[falcon.Request, falcon.Response]:
    """The WSGI app alone (no reaper: tests move the clock and expire leases by hand)."""
    return build_app(Service(settings, database, storage=storage, clock=clock, new_id=new_id)).app
