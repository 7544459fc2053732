"""Every route of the contract, in one table: ``ROUTES``.

Each entry (``table.py``) gives a path, the resource serving it and, for each method, the access it
needs and what the OpenAPI document shows of it. ``add_routes`` serves the table, the ``Authorization``
middleware (``api/auth.py``) guards it and ``openapi_document`` (``api/openapi.py``) describes it; each
takes the table as an argument, so an app can be built on another one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
    be undocumented, one declared but not served a 405.
    """
    paths = [route.path for route in table]
    if len(set(paths)) < len(paths):
        raise ValueError(f"paths given twice: {sorted({path for path in paths if paths.count(path) > 1})}")
    for route in table:
        resource = resources[route.resource]
        served = {method for method in falcon.constants.COMBINED_METHODS if hasattr(resource, route.responder(method))}
        if served != set(route.operations):
            raise ValueError(
                f"{route.path}: {type(resource).__name__} serves {sorted(served)}, the table declares "
                f"{sorted(route.operations)}"
            )
        app.add_route(route.path, resource, suffix=route.suffix)
