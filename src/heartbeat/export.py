"""Exports: every image a ``where`` query selects, with what the software found, streamed as JSON
lines, CSV (RFC 4180) or a COCO detection document, a page of images at a time: memory stays the
same whatever the number of images, and no image's bytes are read.

COCO: the detection format of the COCO dataset (https://cocodataset.org/#format-data): ``images``
(``id``, ``file_name``, ``width``, ``height``), ``annotations`` (``id``, ``image_id``,
``category_id``, ``bbox`` as ``[x, y, width, height]`` in pixels from the top left, ``area``,
``iscrowd``) and ``categories`` (``id``, ``name``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable, Iterator
from typing import Any

from heartbeat import jsontext
from heartbeat.catalog import Catalog, describe_image
from heartbeat.db.models import Image, Software
from heartbeat.errors import InvalidInput, NotFound
from heartbeat.extra_rows import rows_of
from heartbeat.query.resolve import Resolved
from heartbeat.queue import JobQueue

FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8", "coco": "application/json"}
PAGE_IMAGES = 500
IMAGE_FIELDS = (
    "id",
    "filename",
    "uploaded_date",
    "origin",
    "other_data",
    "sha256",
    "size",
    "content_type",
    "width",
    "height",
    "priority",
)
BOX_COLUMNS = ("x", "y", "w", "h")


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    """What to export: ``software`` (None: every registered one), and for COCO the extra table of
    the boxes (``SOFTWARE.TABLE`` with columns x, y, w, h) and the column naming each box's category."""

    format: str
    where: Resolved | None = None
    software: list[Software] | None = None
    table: str | None = None
    category: str | None = None


class Exporter:
    def __init__(
        self,
        catalog: Catalog,
        queue: JobQueue,
        registered: list[Software],
        progress: Callable[[int], object] | None = None,
    ):
        """``progress``: called with the number of images of each page read (a COCO export reads
        every page twice: its images, then their boxes)."""
        self._progress = progress
        self._catalog = catalog
        self._queue = queue
        self._registered = {software.name: software for software in registered}

    def check(self, request: ExportRequest) -> None:
        """:class:`InvalidInput` (400) or :class:`NotFound` (404) for a request that cannot be met,
        before anything is sent."""
        if request.format not in FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FORMATS)}")
        if request.format == "coco":
            self._boxes(request)

    def _boxes(self, request: ExportRequest) -> tuple[Software, str]:
        """The software and extra table of a COCO export's boxes."""
        if request.table is None:
            raise InvalidInput("a coco export needs table=SOFTWARE.TABLE, an extra table with x, y, w, h columns")
        name, _, table = request.table.partition(".")
        software = self._registered.get(name)
        if software is None or table not in software.tables:
            raise NotFound(f"no table {request.table!r}")
        columns = software.tables[table]
        if any(columns.get(column) not in ("int", "float") for column in BOX_COLUMNS):
            raise InvalidInput(f"{request.table} needs number columns x, y, w and h for COCO boxes")
        if request.category is not None and request.category not in columns:
            raise InvalidInput(f"{request.table} has no column {request.category!r}")
        return software, table

    def stream(self, request: ExportRequest) -> Iterator[bytes]:
        """The export, chunk by chunk (errors as :meth:`check`, before the first chunk)."""
        self.check(request)
        if request.format == "jsonl":
            return self._jsonl(request)
        if request.format == "csv":
            return self._csv(request)
        return self._coco(request, *self._boxes(request))

    def count(self, request: ExportRequest) -> int:
        """How many images the export holds (for a progress bar)."""
        return self._catalog.count(where=request.where)

    def _pages(self, request: ExportRequest) -> Iterator[list[Image]]:
        cursor: str | None = None
        while True:
            images, cursor = self._catalog.page(
                origin=None, status=None, cursor=cursor, limit=PAGE_IMAGES, where=request.where
            )
            if images:
                if self._progress is not None:
                    self._progress(len(images))
                yield images
            if cursor is None:
                return

    def _software(self, request: ExportRequest) -> list[Software]:
        return request.software if request.software is not None else list(self._registered.values())

    def _jsonl(self, request: ExportRequest) -> Iterator[bytes]:
        software = self._software(request)
        for images in self._pages(request):
            ids = [image.id for image in images]
            jobs = {item.name: self._queue.jobs_of(item, ids) for item in software}
            rows = {item.name: {table: rows_of(item, table, ids) for table in item.tables} for item in software}
            lines = []
            for image in images:
                found = {}
                for item in software:
                    job = jobs[item.name].get(image.id)
                    found[item.name] = {
                        "status": None if job is None else job.status,
                        "version": None if job is None else job.version,
                        "info": None if job is None else job.info,
                        "rows": {table: rows[item.name][table].get(image.id, []) for table in item.tables},
                    }
                lines.append(jsontext.dumps(describe_image(image) | {"software": found}) + b"\n")
            yield b"".join(lines)

    def _csv(self, request: ExportRequest) -> Iterator[bytes]:
        software = self._software(request)
        out = io.StringIO()
        writer = csv.writer(out)  # RFC 4180: quoted where needed, CRLF line ends
        writer.writerow([*IMAGE_FIELDS, *(f"{item.name}.status" for item in software)])
        for images in self._pages(request):
            ids = [image.id for image in images]
            jobs = {item.name: self._queue.jobs_of(item, ids) for item in software}
            for image in images:
                described = describe_image(image)
                values = [_csv_value(described[field]) for field in IMAGE_FIELDS]
                statuses = [getattr(jobs[item.name].get(image.id), "status", "") for item in software]
                writer.writerow([*values, *statuses])
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
        yield out.getvalue().encode()

    def _coco(self, request: ExportRequest, software: Software, table: str) -> Iterator[bytes]:
        """Two passes in the same order: the images, then their boxes; image ``id`` n is the n-th image."""
        yield b'{"info":{"description":"Heartbeat export"},"images":['
        number = 0
        for images in self._pages(request):
            chunk = []
            for image in images:
                number += 1
                entry = {"id": number, "file_name": image.filename, "width": image.width, "height": image.height}
                chunk.append(jsontext.dumps(entry))
            yield (b"," if number > len(images) else b"") + b",".join(chunk)
        yield b'],"annotations":['
        number = annotation = 0
        categories: dict[str, int] = {}
        for images in self._pages(request):
            boxes = rows_of(software, table, [image.id for image in images])
            chunk = []
            for image in images:
                number += 1
                for row in boxes.get(image.id, []):
                    if any(row[column] is None for column in BOX_COLUMNS):
                        continue  # not a box
                    name = table if request.category is None else str(row[request.category])
                    category = categories.setdefault(name, len(categories) + 1)
                    annotation += 1
                    box = [row[column] for column in BOX_COLUMNS]
                    entry = {
                        "id": annotation,
                        "image_id": number,
                        "category_id": category,
                        "bbox": box,
                        "area": box[2] * box[3],
                        "iscrowd": 0,
                    }
                    chunk.append(jsontext.dumps(entry))
            if chunk:
                yield (b"," if annotation > len(chunk) else b"") + b",".join(chunk)
        named = [{"id": category, "name": name} for name, category in categories.items()]
        yield b'],"categories":' + jsontext.dumps(named) + b"}"


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict):
        return jsontext.dumps(value).decode()
    return value


def software_named(names: str | None, registered: list[Software]) -> list[Software] | None:
    """The software named in ``names`` (comma separated); :class:`NotFound` (404) for an unknown one."""
    if names is None:
        return None
    by_name = {software.name: software for software in registered}
    chosen = []
    for name in names.split(","):
        if name not in by_name:
            raise NotFound(f"no software named {name!r}")
        chosen.append(by_name[name])
    return chosen
