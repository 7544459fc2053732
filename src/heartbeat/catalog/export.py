"""Exports: every image a ``where`` query selects, with what the software found, streamed as JSON
lines, CSV (RFC 4180) or a COCO detection document, a page of images at a time: memory stays the
same whatever the number of images, and no image's bytes are read.

Every export reads in one snapshot (:meth:`Database.snapshot`): its images, statuses, results and
boxes are as of the moment its first chunk is read, whatever commits while it streams.

COCO: the detection format of the COCO dataset (https://cocodataset.org/#format-data): ``images``
(``id``, ``file_name``, ``width``, ``height``), ``annotations`` (``id``, ``image_id``,
``category_id``, ``bbox`` as ``[x, y, width, height]`` in pixels from the top left, ``area``,
``iscrowd``) and ``categories`` (``id``, ``name``). ``file_name`` is ``<image ID><extension>``, unique
in the export (uploads' own names repeat: every camera writes ``img.jpg``); each image also carries
``heartbeat_id`` and ``original_filename``. Sizes and boxes are in the upright frame.

CSV: a text cell that a spreadsheet would run as a formula (OWASP's CSV injection rule: beginning
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) gets a leading ``'``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeGuard

from heartbeat import jsontext
from heartbeat.catalog.extra_rows import rows_of
from heartbeat.catalog.images import Catalog, describe_image
from heartbeat.db.database import Database
from heartbeat.db.models import Image, Software
from heartbeat.errors import InvalidInput, NotFound
from heartbeat.ingest.image_types import extension_of
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
# OWASP's CSV injection rule: what a spreadsheet takes for the start of a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    """What to export: ``software`` (None: every registered one), and for COCO the extra table of
    the boxes (``SOFTWARE.TABLE`` with columns x, y, w, h) and the column naming each box's category."""

    format: str
    where: Resolved | None = None
    software: list[Software] | None = None
    table: str | None = None
    category: str | None = None


PictureSink = Callable[[Image, str], object]


class Exporter:
    def __init__(
        self,
        database: Database,
        catalog: Catalog,
        queue: JobQueue,
        registered: list[Software],
        progress: Callable[[int], object] | None = None,
        pictures: PictureSink | None = None,
    ):
        """``progress``: called with the number of images of each page read (a COCO export reads
        every page twice: its images, then their boxes). ``pictures``: called with each image of a
        COCO export and its ``file_name``, one at a time, as the image is written (inside the snapshot)."""
        self._database = database
        self._progress = progress
        self._pictures = pictures
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
        """The export, chunk by chunk (errors as :meth:`check`, before the first chunk).

        The snapshot begins when the first chunk is read and ends when the last is, or when the
        iterator is closed or collected before: a stream never read holds nothing open. The first
        chunk holds the first page of images (and its query's errors, such as
        :class:`~heartbeat.errors.StatementTimeout`), so that a caller that reads it before it
        answers can still answer with an error rather than a body cut short.
        """
        self.check(request)
        if request.format == "jsonl":
            chunks = self._jsonl(request)
        elif request.format == "csv":
            chunks = self._csv(request)
        else:
            chunks = self._coco(request, *self._boxes(request))
        return self._in_one_snapshot(chunks)

    def _in_one_snapshot(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        with self._database.snapshot():
            yield from chunks

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
            jobs = {item.name: self._queue.reads.jobs_of(item, ids) for item in software}
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
        writer.writerow([csv_cell(name) for name in [*IMAGE_FIELDS, *(f"{item.name}.status" for item in software)]])
        for images in self._pages(request):
            ids = [image.id for image in images]
            jobs = {item.name: self._queue.reads.jobs_of(item, ids) for item in software}
            for image in images:
                described = describe_image(image)
                statuses = [getattr(jobs[item.name].get(image.id), "status", None) for item in software]
                writer.writerow([csv_cell(value) for value in [*(described[f] for f in IMAGE_FIELDS), *statuses]])
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
        yield out.getvalue().encode()

    def _coco(self, request: ExportRequest, software: Software, table: str) -> Iterator[bytes]:
        """Two passes in the same order, in the same snapshot: the images, then their boxes; image
        ``id`` n is the n-th image."""
        head = b'{"info":{"description":"Heartbeat export"},"images":['  # sent with the first page: see stream()
        number = 0
        for images in self._pages(request):
            chunk = []
            for image in images:
                number += 1
                chunk.append(jsontext.dumps(self._coco_image(number, image)))
            yield head + (b"," if number > len(images) else b"") + b",".join(chunk)
            head = b""
        yield head + b'],"annotations":['
        number = annotation = 0
        categories: dict[str, int] = {}
        for images in self._pages(request):
            boxes = rows_of(software, table, [image.id for image in images])
            chunk = []
            for image in images:
                number += 1
                for row in boxes.get(image.id, []):
                    box = coco_box(row)
                    name = table if request.category is None else row[request.category]
                    if box is None or name is None:
                        continue  # not a box, or one of no category
                    # As stored: a text as it is, any other value (a number, true, a JSON column's
                    # object) as its JSON text, not Python's spelling of it (True, {'a': 1}).
                    label = name if isinstance(name, str) else jsontext.dumps(name).decode()
                    category = categories.setdefault(label, len(categories) + 1)
                    annotation += 1
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

    def _coco_image(self, number: int, image: Image) -> dict[str, Any]:
        """The COCO ``images`` entry of the ``number``-th image (its picture handed to ``pictures``)."""
        file_name = coco_file_name(image)
        if self._pictures is not None:
            self._pictures(image, file_name)
        return {
            "id": number,
            "file_name": file_name,
            "width": image.width,
            "height": image.height,
            "heartbeat_id": image.id,
            "original_filename": image.filename,
        }


def coco_file_name(image: Image) -> str:
    """``<image ID><extension>`` (``.jpg``, ``.png``, ... by its content type): unique, and a safe file
    name (IDs are URL-safe)."""
    return image.id + extension_of(image.content_type)


def coco_box(row: dict[str, Any]) -> list[float] | None:
    """``[x, y, w, h]`` of an extra-table row, or None unless all four are finite numbers and the box
    has an area (``w > 0`` and ``h > 0``, and ``w * h`` a finite number: COCO's ``area``)."""
    values = [row.get(column) for column in BOX_COLUMNS]
    box: list[float] = [value for value in values if _finite_number(value)]
    has_area = len(box) == len(BOX_COLUMNS) and box[2] > 0 and box[3] > 0 and math.isfinite(box[2] * box[3])
    return box if has_area else None


def _finite_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: None empty, an object or list as JSON text, and text that a spreadsheet
    would run as a formula behind a ``'`` (numbers are numbers to a spreadsheet, and stay as they are)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = jsontext.dumps(value).decode()
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def software_named(names: str | None, registered: list[Software]) -> list[Software] | None:
    """The software named in ``names`` (comma separated), each once, in the order first named;
    :class:`NotFound` (404) for an unknown one."""
    if names is None:
        return None
    by_name = {software.name: software for software in registered}
    chosen = []
    for name in dict.fromkeys(names.split(",")):
        if name not in by_name:
            raise NotFound(f"no software named {name!r}")
        chosen.append(by_name[name])
    return chosen
