"""``/v1/export``: every image a query selects, with what the software found, streamed."""

from __future__ import annotations

import falcon

from heartbeat.api import schemas
from heartbeat.api.params import query
from heartbeat.catalog import Catalog
from heartbeat.export import FORMATS, Exporter, ExportRequest, software_named
from heartbeat.queue import JobQueue
from heartbeat.registry import Registry


class Export:
    def __init__(self, catalog: Catalog, queue: JobQueue, registry: Registry):
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
        exporter = Exporter(self._catalog, self._queue, registered)
        chunks = exporter.stream(request)  # refuses a bad request before the first byte
        resp.content_type = FORMATS[request.format]
        extension = "json" if request.format == "coco" else request.format
        resp.set_header("Content-Disposition", f'attachment; filename="heartbeat-export.{extension}"')
        resp.stream = chunks
