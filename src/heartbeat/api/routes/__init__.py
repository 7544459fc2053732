"""Every route of the contract, in one table: ``ROUTES``.

Each entry (``table.py``) gives a path, the resource serving it and, for each method, the access it
needs and what the OpenAPI document shows of it. ``add_routes`` serves the table, the ``Authorization``
middleware (``api/auth.py``) guards it and ``openapi_document`` (``api/openapi.py``) describes it; each
takes the table as an argument, so an app can be built on another one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import falcon
import falcon.constants

from heartbeat.api.routes import images, jobs, site, software
from heartbeat.api.routes.table import Route

ROUTES: list[Route] = [*site.ROUTES, *images.ROUTES, *software.ROUTES, *jobs.ROUTES]


def add_routes(
    app: falcon.App[falcon.Request, falcon.Response], resources: Mapping[str, object], table: Sequence[Route] = ROUTES
) -> None:
    """Serve each route of ``table`` by the resource its entry names in ``resources``.

    Raises KeyError for a resource ``resources`` lacks, and ValueError for a path the table gives twice
    (Falcon would keep the last silently) or where a resource's responders (``on_get``, ``on_post_url``
    ...) are not exactly the methods the table gives its route: a method served but not declared would
    be undocumented, one declared but not served a 405. Every route that serves GET also serves HEAD,
    by its GET responder (:func:`head_from_get`).
    """
    paths = [route.path for route in table]
    if len(set(paths)) < len(paths):
        raise ValueError(f"paths given twice: {sorted({path for path in paths if paths.count(path) > 1})}")
    for route in table:
        resource = resources[route.resource]
        head_from_table_get = "GET" in route.operations and "HEAD" not in route.operations
        served = {method for method in falcon.constants.COMBINED_METHODS if hasattr(resource, route.responder(method))}
        if head_from_table_get:
            served.discard("HEAD")  # ours, made below (a resource may be served by several apps)
        if served != set(route.operations):
            raise ValueError(
                f"{route.path}: {type(resource).__name__} serves {sorted(served)}, the table declares "
                f"{sorted(route.operations)}"
            )
        if head_from_table_get:
            setattr(resource, route.responder("HEAD"), head_from_get(getattr(resource, route.responder("GET"))))
        app.add_route(route.path, resource, suffix=route.suffix)


def head_from_get(on_get: Callable[..., None]) -> Callable[..., None]:
    """A HEAD responder that answers as ``on_get`` does, without the body (RFC 9110 9.3.2).

    Falcon sends no body for HEAD, and keeps the Content-Length the GET answer would have (none for
    one streamed with no known length); a file the GET responder opened to stream is closed at once.
    """

    @functools.wraps(on_get)
    def on_head(req: falcon.Request, resp: falcon.Response, **params: Any) -> None:
        on_get(req, resp, **params)
        stream = resp.stream
        if stream is not None:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            # A streamed answer of unknown length (an export) keeps it unknown: Falcon would say 0.
            resp.stream = None if resp.get_header("Content-Length") else iter(())

    return on_head
