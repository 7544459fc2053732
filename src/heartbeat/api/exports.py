"""``/v1/export``: every image a query selects, with what the software found, streamed."""

from __future__ import annotations

from collections.abc import Iterator

import falcon

from heartbeat.api import schemas
from heartbeat.api.components import query as parameter
from heartbeat.api.params import query, token_of
from heartbeat.api.routing import Operation, Parts, Reply, Route
from heartbeat.api.schemas import Schema
from heartbeat.auth.roles import Access
from heartbeat.catalog.export import FORMATS, Exporter, ExportRequest, software_named
from heartbeat.catalog.images import Catalog
from heartbeat.catalog.registry import Registry
from heartbeat.db.database import Database
from heartbeat.privacy import actions
from heartbeat.privacy.audit import Audit
from heartbeat.queue import JobQueue

EXPORT_FORMATS: Schema = {"enum": list(FORMATS)}

EXPORT_PARAMETERS = (
    parameter("format", EXPORT_FORMATS, "`jsonl` (default), `csv` or `coco`"),
    parameter("where", schemas.WHERE, schemas.WHERE["description"]),
    parameter("software", schemas.TEXT, "software to include, comma separated (default: every one)"),
    parameter("table", schemas.TEXT, "coco: `SOFTWARE.TABLE`, an extra table with x, y, w, h columns: the boxes"),
    parameter("category", schemas.TEXT, "coco: the column of that table naming each box's category"),
)


class Export:
    """The body streams after the responder returns, on the same server thread and its connection:
    the export's snapshot is opened by the first chunk, which the responder reads, and closed by the
    last, or by the server closing the stream (a client gone midway)."""

    def __init__(self, database: Database, catalog: Catalog, queue: JobQueue, registry: Registry, audit: Audit):
        self._audit = audit
        self._database = database
        self._catalog = catalog
        self._queue = queue
        self._registry = registry

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        registered = self._registry.all()
        request = ExportRequest(
            format=query(req, "format", {"enum": list(FORMATS)}) or "jsonl",
            where=self._registry.where(query(req, "where", schemas.WHERE)),
            software=software_named(query(req, "software", schemas.TEXT), registered),
            table=query(req, "table", schemas.TEXT),
            category=query(req, "category", schemas.TEXT),
        )
        exporter = Exporter(self._database, self._catalog, self._queue, registered)
        chunks = exporter.stream(request)  # refuses a bad request before the first byte
        # Results in bulk handed out: recorded before the snapshot opens (it takes no write). The entry
        # names the format and the software, not the expression (it may name an origin).
        if req.method != "HEAD":
            software = [item.name for item in request.software or registered]
            self._audit.record(
                actions.EXPORT, token_of(req), format=request.format, software=software, filtered=bool(request.where)
            )
        # The first page is read before the status goes out: a query past HEARTBEAT_QUERY_SECONDS
        # there (where it is most likely: the first page walks the most) is a 503 with Retry-After,
        # not a 200 whose body stops short. A fault on a later page cuts the connection, so a client
        # sees an incomplete body (a chunked answer without its last chunk), never a shorter export.
        first = next(chunks, b"")
        resp.content_type = FORMATS[request.format]
        extension = "json" if request.format == "coco" else request.format
        resp.set_header("Content-Disposition", f'attachment; filename="heartbeat-export.{extension}"')
        resp.stream = _beginning_with(first, chunks)


def _beginning_with(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    """``first``, then ``rest``; closing this closes ``rest`` (and so ends the export's snapshot)."""
    try:
        yield first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()


# --- its routes ----------------------------------------------------------------------------------


def export(parts: Parts) -> Export:
    return Export(parts.database, parts.catalog, parts.queue, parts.registry, parts.audit)


ROUTES: list[Route] = [
    Route(
        "/v1/export",
        export,
        {
            "GET": Operation(
                Access.READ,
                "every image a query selects, with what each software found, streamed (no image bytes)",
                tuple(Reply(200, media_type=media_type) for media_type in dict.fromkeys(FORMATS.values())),
                errors=(400, 404),
                parameters=EXPORT_PARAMETERS,
            )
        },
    ),
]
