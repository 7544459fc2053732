"""Images in: by upload or by URL. Limits, one whole decode by Pillow, sha256 dedupe, bytes before the row."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import string
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from typing import IO, Any, BinaryIO, cast

import peewee

from heartbeat import jsontext
from heartbeat.catalog.images import describe_image
from heartbeat.config import Settings
from heartbeat.db.database import Database, transactional
from heartbeat.db.models import Image
from heartbeat.errors import Busy, InvalidInput, TooLarge
from heartbeat.events.outbox import IMAGE_CREATED, NewEvent
from heartbeat.ingest import urlfetch
from heartbeat.ingest.decode import Picture, read_picture
from heartbeat.ingest.thumbnails import THUMBNAIL_TYPE, thumbnail_key, write_thumbnail
from heartbeat.queue import JobQueue
from heartbeat.storage import Storage

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
SPOOL_MEMORY_BYTES = 16 * 1024 * 1024  # check_stream holds smaller objects in memory
IMAGE_FIELDS = Image._meta.sorted_fields
MAX_ORIGIN_CHARS = 255
MAX_PRIORITY = 1_000_000  # priorities run from -MAX_PRIORITY to MAX_PRIORITY; higher is claimed first


def new_image_id() -> str:
    """16 URL-safe random characters (95 random bits), the first a letter or digit: an ID never reads as
    a command-line flag, nor as a formula in a CSV cell (which the export would then write with a ``'``)."""
    return secrets.choice(string.ascii_letters + string.digits) + secrets.token_urlsafe(12)[1:]


@dataclasses.dataclass(frozen=True)
class CheckedImage:
    """What the hash and Pillow's decode said about a spooled file."""

    sha256: str
    size: int  # bytes
    picture: Picture


@dataclasses.dataclass(frozen=True)
class Ingested:
    image: Image
    created: bool


class Ingest:
    """Turns bytes into a stored image with a pending job for every software."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        database: Database,
        queue: JobQueue,
        *,
        clock: Callable[[], float],
        new_id: Callable[[], str] = new_image_id,
    ):
        self._settings = settings
        self._storage = storage
        self._database = database
        self._queue = queue
        self._clock = clock
        self._new_id = new_id
        self._spool_dir = settings.data_dir / "tmp"
        self._fetch_slots = threading.BoundedSemaphore(settings.url_fetches_limit)
        # An upload's two statements on the images table as SQL text made once: peewee's query builder
        # cost more CPU than the rest of the database work of an upload.
        table, p = database.quote(Image._meta.table_name), database.param
        columns = ", ".join(database.quote(field.column_name) for field in IMAGE_FIELDS)
        self._find_sql = f"SELECT id FROM {table} WHERE sha256 = {p}"
        self._existing_sql = f"SELECT sha256 FROM {table} WHERE sha256 IN "
        self._insert_sql = f"INSERT INTO {table} ({columns}) VALUES "
        self._row_params = database.params(len(IMAGE_FIELDS))

    @contextlib.contextmanager
    def receive(self, stream: BinaryIO) -> Iterator[Path]:
        """Spool an uploaded stream to a temporary file, refusing it past the byte limit."""
        with self._spooled() as (spool, path):
            _copy_capped(stream, spool, self._settings.max_upload_bytes)
            yield path

    @contextlib.contextmanager
    def fetch(self, url: str) -> Iterator[tuple[Path, str]]:
        """Fetch ``url`` through the address guard into a temporary file; yield it and a file name.

        Raises :class:`Busy` (503, ``Retry-After``) when ``url_fetches_limit`` fetches run already:
        slow origins hold a thread each until the URL deadline, and may not hold most of them.
        """
        settings = self._settings
        if not self._fetch_slots.acquire(blocking=False):
            raise Busy(f"{settings.url_fetches_limit} uploads by URL are being fetched already; try again shortly")
        try:
            with self._fetched(url) as fetched:
                yield fetched
        finally:
            self._fetch_slots.release()

    @contextlib.contextmanager
    def _fetched(self, url: str) -> Iterator[tuple[Path, str]]:
        settings = self._settings
        with self._spooled() as (spool, path):
            filename = urlfetch.fetch(
                url,
                spool,
                allow=settings.url_allow,
                timeout_seconds=settings.url_timeout_seconds,
                deadline_seconds=settings.url_deadline_seconds,
                max_bytes=settings.max_upload_bytes,
                max_redirects=settings.url_max_redirects,
            )
            spool.flush()
            yield path, filename

    @contextlib.contextmanager
    def _spooled(self) -> Iterator[tuple[IO[bytes], Path]]:
        try:
            fd, name = tempfile.mkstemp(dir=self._spool_dir, prefix="upload-")
        except FileNotFoundError:  # made on first use, not before every upload (see LocalStorage.put_file)
            self._spool_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self._spool_dir, prefix="upload-")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as spool:
                yield spool, path
        finally:
            path.unlink(missing_ok=True)  # gone already when storage moved it

    def store(
        self,
        path: Path,
        *,
        filename: str | None,
        origin: str | None,
        other_data: dict[str, Any] | None,
        priority: int = 0,
    ) -> Ingested:
        """Check the spooled file, move it into storage and commit its row and jobs.

        The same bytes as a stored image give that image back (``created`` False): the
        unique index on sha256 decides, so two concurrent uploads cannot both win.
        """
        check_metadata(origin, other_data, priority)
        checked = check_image(path, self._settings.max_pixels)
        existing = self.find(checked.sha256)
        if existing is not None:
            return Ingested(existing, created=False)
        image_id = self._new_id()
        picture = checked.picture
        key = image_key(image_id, picture)
        self.store_thumbnail(picture, image_id, path.with_name(path.name + ".thumbnail.jpg"))
        self._storage.put_file(key, path, picture.image_type.content_type)
        row = image_row(
            checked,
            image_id=image_id,
            storage_key=key,
            filename=_clean_filename(filename) or f"{image_id}{picture.image_type.extension}",
            origin=origin,
            other_data=other_data,
            priority=priority,
            uploaded_date=self._clock(),
        )
        return self.register_row(row, owns_object=True)

    def register_row(
        self, row: dict[str, Any], *, owns_object: bool, also: Callable[[list[Image]], None] | None = None
    ) -> Ingested:
        """Commit a row of :func:`image_row` (its bytes already in storage under its ``storage_key``, its
        thumbnail under its ID), with a job for every software and whatever ``also`` writes, in one
        transaction. Bytes another image has already are that image (``created`` False): the row is
        not written, and the thumbnail (and the object, when ``owns_object``) is removed again."""
        image_id, storage_key, sha256 = row["id"], row["storage_key"], row["sha256"]
        stored_key = storage_key if owns_object else None
        claimable: list[str] = []
        try:
            [image], claimable = self._insert_images([row], also)
        except peewee.IntegrityError:
            existing = self.find(sha256)
            if existing is None or existing.id != image_id:
                # Someone stored the same bytes between our look and our insert: theirs stands.
                self._discard(image_id, stored_key)
                if existing is None:
                    raise
                return Ingested(existing, created=False)
            image = existing  # our own insert: it committed, then the connection was lost and it ran again
        except (peewee.OperationalError, peewee.InterfaceError):
            # The COMMIT's outcome is unknown: better an orphaned object (`heartbeat check` finds it)
            # than a row without its bytes.
            raise
        except BaseException:
            self._discard(image_id, stored_key)
            raise
        if claimable:
            self._queue.signal.notify(*claimable)
        return Ingested(image, created=True)

    def register_all(self, rows: list[dict[str, Any]], also: Callable[[list[Image]], None]) -> list[Image]:
        """Commit many rows of :func:`image_row` (one statement), a job for every software for each, and
        whatever ``also`` writes, in one transaction: all or none. Raises ``peewee.IntegrityError``
        (nothing committed, nothing removed) when any of their bytes is an image already: then
        :meth:`register_row` them one by one."""
        images, claimable = self._insert_images(rows, also)
        if claimable:
            self._queue.signal.notify(*claimable)
        return images

    @transactional
    def _insert_images(
        self, rows: list[dict[str, Any]], also: Callable[[list[Image]], None] | None = None
    ) -> tuple[list[Image], list[str]]:
        """The images' rows (one statement) and a job for every software for each, together; and the
        software they gave claimable work."""
        self._database.execute(
            self._insert_sql + ", ".join(self._row_params for _ in rows),
            [field.db_value(row[field.name]) for row in rows for field in IMAGE_FIELDS],
        )
        images = [Image(**row) for row in rows]
        claimable = self._queue.rows.create_jobs_for(images)
        if also is not None:
            also(images)
        self._queue.outbox.add_many(
            [NewEvent(IMAGE_CREATED, describe_image(image), image_id=image.id) for image in images]
        )
        return images, claimable

    def existing(self, sha256s: list[str]) -> set[str]:
        """Which of these sha256 digests stored images have."""
        if not sha256s:
            return set()
        found = self._database.execute(self._existing_sql + self._database.params(len(sha256s)), sha256s)
        return {row[0] for row in found}

    def find(self, sha256: str) -> Image | None:
        """The stored image with these bytes, if any."""
        found = self._database.execute(self._find_sql, (sha256,)).fetchone()
        return None if found is None else Image.get_or_none(Image.id == found[0])

    def _discard(self, image_id: str, key: str | None) -> None:
        if key is not None:
            self._storage.delete(key)
        self._storage.delete(thumbnail_key(image_id))

    def store_thumbnail(self, picture: Picture, image_id: str, thumbnail: Path) -> None:
        """The thumbnail of ``picture`` into storage, by way of the scratch file ``thumbnail``."""
        try:
            write_thumbnail(picture.decoded, picture.turn, thumbnail)
        except (OSError, ValueError) as error:  # a picture Pillow decodes but cannot convert to RGB: no thumbnail
            log.warning("no thumbnail for %s: %s", image_id, error)
            return
        try:
            self._storage.put_file(thumbnail_key(image_id), thumbnail, THUMBNAIL_TYPE)
        finally:
            thumbnail.unlink(missing_ok=True)


def check_metadata(origin: Any, other_data: Any, priority: Any = 0) -> None:
    """:class:`InvalidInput` (400) unless the image's metadata can be stored and sent back as JSON."""
    if origin is not None and (
        not isinstance(origin, str) or len(origin) > MAX_ORIGIN_CHARS or not jsontext.is_unicode(origin)
    ):
        raise InvalidInput(f"origin must be Unicode text of at most {MAX_ORIGIN_CHARS} characters")
    if other_data is not None and not isinstance(other_data, dict):
        raise InvalidInput("other_data must be a JSON object")
    try:
        jsontext.check_value(other_data)
    except ValueError as error:
        raise InvalidInput(f"other_data cannot be stored as JSON: {error}") from None
    check_priority(priority)


def check_priority(priority: Any) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
        raise InvalidInput(f"priority must be an integer from {-MAX_PRIORITY} to {MAX_PRIORITY}")


def image_row(
    checked: CheckedImage,
    *,
    image_id: str,
    storage_key: str,
    filename: str,
    origin: str | None,
    other_data: dict[str, Any] | None,
    priority: int,
    uploaded_date: float,
) -> dict[str, Any]:
    """The overview table's row of checked bytes stored under ``storage_key``."""
    picture = checked.picture
    return {
        "id": image_id,
        "filename": filename,
        "uploaded_date": uploaded_date,
        "origin": origin,
        "other_data": other_data,
        "priority": priority,
        "sha256": checked.sha256,
        "size": checked.size,
        "content_type": picture.image_type.content_type,
        "width": picture.width,
        "height": picture.height,
        "orientation": picture.orientation,
        "storage_key": storage_key,
    }


def image_key(image_id: str, picture: Picture) -> str:
    """Where the bytes of a new image are stored: ``images/<first two characters>/<id><extension>``."""
    return f"images/{image_id[:2]}/{image_id}{picture.image_type.extension}"


def check_stream(stream: BinaryIO, max_bytes: int, max_pixels: int) -> CheckedImage:
    """Read ``stream`` once, as :func:`check_image` checks a file: hashed as it is read, held in memory
    (in a temporary file past ``SPOOL_MEMORY_BYTES``) and decoded whole from there.

    Raises :class:`TooLarge` past ``max_bytes`` (or ``max_pixels``) and :class:`UnsupportedImage`
    for bytes that are no picture; whatever the stream raises is passed on.
    """
    digest = hashlib.sha256()
    size = 0
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
        while chunk := stream.read(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                raise TooLarge(f"it is larger than {max_bytes} bytes")
            digest.update(chunk)
            spool.write(chunk)
        spool.seek(0)
        return CheckedImage(digest.hexdigest(), size, read_picture(cast(BinaryIO, spool), max_pixels))


def check_image(path: Path, max_pixels: int) -> CheckedImage:
    """Hash the file and decode it whole (:func:`heartbeat.ingest.decode.read_picture`, which raises
    :class:`UnsupportedImage` or :class:`TooLarge` for what is not a picture within the limit)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
        size = f.tell()
        f.seek(0)
        return CheckedImage(digest.hexdigest(), size, read_picture(f, max_pixels))


def _copy_capped(stream: BinaryIO, out: IO[bytes], max_bytes: int) -> None:
    total = 0
    while chunk := stream.read(CHUNK_BYTES):
        total += len(chunk)
        if total > max_bytes:
            raise TooLarge(f"the upload is larger than {max_bytes} bytes")
        out.write(chunk)
    out.flush()


def _clean_filename(filename: str | None) -> str:
    """The client's file name without any folders, at most 255 characters; metadata only."""
    if not filename:
        return ""
    return PurePath(filename.replace("\\", "/")).name[:255]
