"""What an entry of the route table says: a path, the resource serving it, and for each method the
access it needs and what the OpenAPI document shows of it (request body, parameters, answers, errors).

Falcon's routes (``add_routes``), the authorization middleware (``api/auth.py``) and the OpenAPI
document (``api/openapi.py``) are all read off these entries, so a route is declared once.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from heartbeat.api.schemas import Schema
from heartbeat.auth.roles import Access

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PATH_FIELD = re.compile(r"\{(\w+)(?::\w+)?\}")  # a field of a URI template, with its converter if any


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
    """A path (Falcon's URI template), the name of the resource serving it (a key of the resources
    ``add_routes`` is given), and its operations by HTTP method. ``suffix``: Falcon's responder
    suffix, for a resource that serves several paths (``on_get_url`` for ``suffix="url"``)."""

    path: str
    resource: str
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
