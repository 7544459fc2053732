"""What operators watch: ``/v1/health`` (200 when the database and the object storage answer, else 503
with what failed) and ``/metrics`` (Prometheus' text format)."""

from __future__ import annotations

import falcon
import peewee
from prometheus_client import CONTENT_TYPE_LATEST

from heartbeat.api.routing import Operation, Parts, Reply, Route
from heartbeat.auth.roles import Access
from heartbeat.db.database import Database
from heartbeat.errors import HeartbeatError
from heartbeat.metrics import Metrics
from heartbeat.storage import Storage


class HealthCheck:
    uses_database = False  # the middleware does not connect first: an outage is reported here

    def __init__(self, database: Database, storage: Storage):
        self._database = database
        self._storage = storage

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks = {"database": "ok", "storage": "ok"}
        try:
            self._database.execute("SELECT 1").fetchone()
        except peewee.PeeweeException as error:
            checks["database"] = f"unreachable: {type(error).__name__}"
        try:
            self._storage.check()
        except HeartbeatError as error:
            checks["storage"] = f"unreachable: {error.description}"
        healthy = all(value == "ok" for value in checks.values())
        resp.media = {"status": "ok" if healthy else "unavailable", "checks": checks}
        resp.status = falcon.HTTP_200 if healthy else falcon.HTTP_503


class MetricsPage:
    """``GET /metrics``: the Prometheus text format."""

    def __init__(self, metrics: Metrics):
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self._metrics.exposition()


# --- its routes ----------------------------------------------------------------------------------


def health(parts: Parts) -> HealthCheck:
    return HealthCheck(parts.database, parts.storage)


def metrics_page(parts: Parts) -> MetricsPage:
    return MetricsPage(parts.metrics)


ROUTES: list[Route] = [
    Route(
        "/v1/health",
        health,
        {
            "GET": Operation(
                Access.PUBLIC,
                "whether the database and the object store answer",
                (Reply(200, {"type": "object"}), Reply(503, {"type": "object"})),
            )
        },
    ),
    Route(
        "/metrics",
        metrics_page,
        {
            "GET": Operation(
                Access.READ,
                "Prometheus metrics",
                Reply(200, media_type="text/plain", description="the Prometheus text format"),
            )
        },
    ),
]
