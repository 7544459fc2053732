"""What an entry of the route table says, and how the table is served.

A :class:`Route` gives a path, the function that makes the resource serving it (from the app's
:class:`Parts`), and for each method the access it needs and what the OpenAPI document shows of it
(request body, parameters, answers, errors). Each resource module of ``api/`` declares its routes
beside its resources (its ``ROUTES``); ``api/routes.py`` gathers them. Falcon's routes
(:func:`add_routes`), the authorization middleware (``api/auth.py``) and the OpenAPI document
(``api/openapi.py``) are all read off these entries, so a route is declared once, in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import falcon
import falcon.constants

from heartbeat.api.schemas import Schema
from heartbeat.auth.roles import Access

if TYPE_CHECKING:
    from heartbeat.catalog.images import Catalog
    from heartbeat.catalog.registry import Registry
    from heartbeat.config import Settings
    from heartbeat.db.database import Database
    from heartbeat.events.feed import EventFeed
    from heartbeat.events.webhooks import Webhooks
    from heartbeat.ingest.direct_uploads import DirectUploads
    from heartbeat.ingest.registration import Ingest
    from heartbeat.metrics import Metrics
    from heartbeat.privacy.audit import Audit
    from heartbeat.privacy.chores import PrivacyChores
    from heartbeat.privacy.erasure import Erasures
    from heartbeat.privacy.retention import RetentionPolicies
    from heartbeat.queue import JobQueue
    from heartbeat.queue.waiting import WaitingClaims
    from heartbeat.storage import Storage

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PATH_FIELD = re.compile(r"\{(\w+)(?::\w+)?\}")  # a field of a URI template, with its converter if any


@dataclasses.dataclass(frozen=True)
class Parts:
    """What the app's resources are made of: each route's ``resource`` function takes these."""

    settings: Settings
    database: Database
    storage: Storage
    registry: Registry
    queue: JobQueue
    waiting: WaitingClaims
    metrics: Metrics
    catalog: Catalog
    ingest: Ingest
    uploads: DirectUploads
    events: EventFeed
    webhooks: Webhooks
    audit: Audit
    erasures: Erasures
    retention: RetentionPolicies
    chores: PrivacyChores
    table: Sequence[Route]  # the routes the app serves (the OpenAPI document describes them)


MakeResource = Callable[[Parts], object]


@dataclasses.dataclass(frozen=True)
class Reply:
    """A success answer: its status and its body, described as a JSON ``schema`` or by its
    ``media_type`` alone (neither: no body described). ``description`` defaults to the operation's
    summary; ``headers`` maps a header's name to its OpenAPI header object."""

    status: int
    schema: Schema | None = None
    media_type: str | None = None
    description: str | None = None
    headers: Mapping[str, Schema] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Body:
    """A request body: its schema for each media type it may come as. ``encoding`` says how the
    fields of a ``multipart/form-data`` body are encoded (OpenAPI's encoding object, by field)."""

    content: Mapping[str, Schema]
    required: bool = True
    encoding: Mapping[str, Schema] = dataclasses.field(default_factory=dict)


def json_body(schema: Schema, *, required: bool = True) -> Body:
    """A JSON body checked against ``schema`` (one of ``api/schemas.py``, the very one the resource reads it with)."""
    return Body({"application/json": schema}, required)


@dataclasses.dataclass(frozen=True)
class Operation:
    """One method of a route.

    ``access``: what the caller's role must allow. ``ok``: the success answer, or several.
    ``errors``: the error statuses it may answer besides 401 and 403 (which every operation that is
    not public may answer). ``parameters``: its query parameters, as OpenAPI parameter objects.
    """

    access: Access
    summary: str
    ok: Reply | tuple[Reply, ...]
    errors: tuple[int, ...] = ()
    body: Body | None = None
    parameters: tuple[Schema, ...] = ()

    @property
    def replies(self) -> tuple[Reply, ...]:
        return self.ok if isinstance(self.ok, tuple) else (self.ok,)


@dataclasses.dataclass(frozen=True)
class Route:
    """A path (Falcon's URI template), the function that makes the resource serving it (routes that
    name the same function share one resource), and its operations by HTTP method. ``suffix``:
    Falcon's responder suffix, for a resource that serves several paths (``on_get_url`` for
    ``suffix="url"``)."""

    path: str
    resource: MakeResource
    operations: Mapping[str, Operation]
    suffix: str | None = dataclasses.field(default=None, kw_only=True)

    def responder(self, method: str) -> str:
        """The name of the resource's method that answers ``method`` here."""
        return f"on_{method.lower()}" + (f"_{self.suffix}" if self.suffix else "")

    def fields(self) -> list[str]:
        """The names of the path's fields, in order (``{key:path}`` gives ``key``)."""
        return PATH_FIELD.findall(self.path)

    def is_public(self) -> bool:
        accesses = {operation.access for operation in self.operations.values()}
        return accesses == {Access.PUBLIC}

    def access(self, method: str) -> Access:
        """What a ``method`` request needs here.

        ``HEAD`` needs what ``GET`` needs. Falcon answers a method the route does not declare itself
        (OPTIONS, or 405): on a public
        route that needs nothing, like the route; elsewhere a read method needs read access and
        any other method what the route's writes need (admin where they differ or there are none),
        so that a 405 tells nothing to a caller the route's writes would refuse.
        """
        operation = self.operations.get("GET" if method == "HEAD" else method)  # HEAD is GET without a body
        if operation is not None:
            return operation.access
        if self.is_public():
            return Access.PUBLIC
        if method in READ_METHODS:
            return Access.READ
        writes = {operation.access for name, operation in self.operations.items() if name not in READ_METHODS}
        return writes.pop() if len(writes) == 1 else Access.ADMIN


def add_routes(app: falcon.App[falcon.Request, falcon.Response], parts: Parts, table: Sequence[Route]) -> None:
    """Serve each route of ``table`` by the resource its entry makes from ``parts`` (one for the
    routes that name the same function).

    Raises ValueError for a path the table gives twice (Falcon would keep the last silently) or where
    a resource's responders (``on_get``, ``on_post_url`` ...) are not exactly the methods the table
    gives its route: a method served but not declared would be undocumented, one declared but not
    served a 405. Every route that serves GET also serves HEAD, by its GET responder
    (:func:`head_from_get`).
    """
    paths = [route.path for route in table]
    if len(set(paths)) < len(paths):
        raise ValueError(f"paths given twice: {sorted({path for path in paths if paths.count(path) > 1})}")
    made: dict[MakeResource, object] = {}
    for route in table:
        if route.resource not in made:
            made[route.resource] = route.resource(parts)
        resource = made[route.resource]
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
