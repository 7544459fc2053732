"""The routes around the API proper: the dashboard page, health, metrics and the OpenAPI document."""

from __future__ import annotations

from heartbeat.api.routes.table import Operation, Reply, Route
from heartbeat.roles import Access

ROUTES = [
    Route(
        "/",
        "dashboard_page",
        {
            "GET": Operation(
                Access.PUBLIC, "the dashboard page", Reply(200, media_type="text/html", description="the dashboard")
            )
        },
    ),
    Route(
        "/v1/health",
        "health",
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
        "metrics_page",
        {
            "GET": Operation(
                Access.READ,
                "Prometheus metrics",
                Reply(200, media_type="text/plain", description="the Prometheus text format"),
            )
        },
    ),
    Route("/openapi.json", "openapi", {"GET": Operation(Access.READ, "this document", Reply(200, {"type": "object"}))}),
]
