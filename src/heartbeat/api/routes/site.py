"""The routes around the API proper: the dashboard, health, metrics, the OpenAPI document and its page."""

from __future__ import annotations

from heartbeat.api.routes.table import Operation, Reply, Route
from heartbeat.auth.roles import Access

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
        "/dashboard/{name}",
        "dashboard_files",
        {
            "GET": Operation(
                Access.PUBLIC,
                "a file of the dashboard or the API reference page (app.js, style.css, docs.js, docs.css)",
                Reply(200, media_type="text/plain", description="the file, as its media type"),
                errors=(404,),
            )
        },
    ),
    Route(
        "/docs",
        "docs_page",
        {
            "GET": Operation(
                Access.PUBLIC,
                "the API reference: this document, rendered (Swagger UI, served from here: it works offline)",
                Reply(200, media_type="text/html", description="the page"),
            )
        },
    ),
    Route(
        "/docs/assets/{name}",
        "docs_assets",
        {
            "GET": Operation(
                Access.PUBLIC,
                "Swagger UI's script, style and icons, for /docs",
                Reply(200, media_type="text/plain", description="the file, as its media type"),
                errors=(404,),
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
