"""``GET /openapi.json``: an OpenAPI 3.1 document of every route, read off the route table.

Request bodies are the very schemas ``read_body`` checks (``api/schemas.py``); the answers' schemas
are in ``api/components.py``. ``tests/test_openapi.py`` keeps the document and the routes in step,
and the schemathesis run checks the answers against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import falcon

from heartbeat import __version__
from heartbeat.api.components import COMPONENTS, PATH_FIELDS, RETRY_AFTER, ref
from heartbeat.api.routing import PATH_FIELD, Body, Operation, Parts, Reply, Route
from heartbeat.api.schemas import Schema
from heartbeat.auth.roles import Access

__all__ = ["COMPONENTS", "OpenApi", "openapi_document"]

ERRORS = {
    400: "bad field or body",
    401: "no token, or an unknown or revoked one",
    403: "the token's role does not allow this",
    404: "unknown image, software or table",
    409: "stale or wrong token, or a conflict",
    410: "no longer kept: an event cursor older than HEARTBEAT_EVENTS_RETAIN_SECONDS",
    413: "too large",
    415: "not a supported image, or a body that is not JSON",
    422: "well-formed but refused",
    503: "the database or the object store is unreachable, or the server is busy (too many uploads by URL "
    "at once); `Retry-After` says when to try again",
}


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _reply(reply: Reply, summary: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": reply.description or summary}
    if reply.schema is not None or reply.media_type is not None:
        described = {} if reply.schema is None else {"schema": reply.schema}
        answer["content"] = {reply.media_type or falcon.MEDIA_JSON: described}
    if reply.headers:
        answer["headers"] = dict(reply.headers)
    return answer


def _error(status: int) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": ERRORS[status], "content": _json(ref("Error"))}
    if status == 503:
        answer["headers"] = {"Retry-After": RETRY_AFTER}
    return answer


def _body(body: Body) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for media_type, schema in body.content.items():
        encoding = {"encoding": dict(body.encoding)} if body.encoding and media_type.startswith("multipart/") else {}
        content[media_type] = {"schema": schema} | encoding
    return {"required": body.required, "content": content}


def _operation(operation: Operation) -> dict[str, Any]:
    public = operation.access is Access.PUBLIC
    responses: dict[str, Any] = {}
    for reply in operation.replies:  # replies of one status in several media types: one response, each type
        answer = _reply(reply, operation.summary)
        earlier = responses.get(str(reply.status))
        if earlier is not None and "content" in earlier:
            answer["content"] = earlier["content"] | answer.get("content", {})
        responses[str(reply.status)] = answer
    for status in sorted({*operation.errors, *(() if public else (401, 403))}):
        responses[str(status)] = _error(status)
    described: dict[str, Any] = {"summary": operation.summary, "responses": responses}
    if operation.parameters:
        described["parameters"] = list(operation.parameters)
    if operation.body is not None:
        described["requestBody"] = _body(operation.body)
    if public:
        described["security"] = []
    return described


def _path_item(route: Route) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if route.fields():
        item["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": PATH_FIELDS.get(name, {"type": "string"})}
            for name in route.fields()
        ]
    return item | {method.lower(): _operation(operation) for method, operation in route.operations.items()}


def openapi_document(table: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI document of the routes of ``table``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Heartbeat",
            "version": __version__,
            "description": "A database and work coordinator for images that computer-vision software analyses. "
            "Every route that answers GET answers HEAD the same way, without the body.",
        },
        "servers": [{"url": "/"}],
        "paths": {PATH_FIELD.sub(r"{\1}", route.path): _path_item(route) for route in table},
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


class OpenApi:
    def __init__(self, table: Sequence[Route]) -> None:
        self._document = openapi_document(table)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._document


# --- its routes ----------------------------------------------------------------------------------


def openapi(parts: Parts) -> OpenApi:
    return OpenApi(parts.table)


ROUTES: list[Route] = [
    Route("/openapi.json", openapi, {"GET": Operation(Access.READ, "this document", Reply(200, {"type": "object"}))}),
]
